"""Developer sessions: `nox` runs tests, lint and typecheck; `nox -s coverage` adds the floor."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "scripts", "examples", "noxfile.py")
    session.run(
        "ruff",
        "format",
        "--check",
        "src",
        "tests",
        "benchmarks",
        "scripts",
        "examples",
        "noxfile.py",
    )


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, relaxed on tests."""
    session.install("-e", ".[test]", "mypy>=1.11", "nox>=2024.4")
    session.run("mypy", "src", "tests", "benchmarks", "scripts", "examples", "noxfile.py")


@nox.session
def coverage(session: nox.Session) -> None:
    """The suite under branch coverage, with a floor."""
    session.install("-e", ".[test]", "coverage[toml]>=7.5")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "report", "--fail-under=80", "--skip-covered")
