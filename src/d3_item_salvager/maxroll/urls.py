"""Building request URLs from untrusted values. Nothing else is ever templated into a URL."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from d3_item_salvager.errors import UnsafeUrlError

# Hosts a search hit's permalink may name. The request itself always goes to the configured site.
MAXROLL_HOSTS = frozenset({"maxroll.gg", "www.maxroll.gg"})
GUIDE_PATH_PREFIX = "/d3/guides/"

_PLANNER_ID = re.compile(r"[0-9]{1,15}")
_GUIDE_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,200}")


def validate_planner_id(planner_id: str) -> str:
    """The id itself when it is 1 to 15 ASCII digits."""
    if not isinstance(planner_id, str) or not _PLANNER_ID.fullmatch(planner_id):
        raise UnsafeUrlError("planner id", str(planner_id), "must be 1 to 15 ASCII digits")
    return planner_id


def planner_profile_url(template: str, planner_id: str) -> str:
    """The profile URL for a validated planner id."""
    return template.replace("{planner_id}", validate_planner_id(planner_id))


def guide_path(permalink: object) -> str:
    """The path of a build guide's permalink, refusing anything but `/d3/guides/<slug>`.

    The permalink must be an https URL on maxroll.gg; its slug must be lowercase letters, digits
    and hyphens, so no encoded, dotted, `@` or `//` form can reach another host or path.
    """
    if not isinstance(permalink, str):
        raise UnsafeUrlError("permalink", str(permalink), "is missing or not a string")
    if any(ch in permalink for ch in "\\@%\x00\r\n\t "):
        raise UnsafeUrlError("permalink", permalink, "contains a forbidden character")
    parts = urlsplit(permalink)
    if parts.scheme != "https" or parts.netloc not in MAXROLL_HOSTS:
        raise UnsafeUrlError("permalink", permalink, "is not an https URL on maxroll.gg")
    if parts.query or parts.fragment:
        raise UnsafeUrlError("permalink", permalink, "has a query or fragment")
    path = parts.path.rstrip("/")
    slug = path.removeprefix(GUIDE_PATH_PREFIX)
    if not path.startswith(GUIDE_PATH_PREFIX) or not _GUIDE_SLUG.fullmatch(slug):
        raise UnsafeUrlError("permalink", permalink, "is not a /d3/guides/<slug> path")
    return path


def guide_page_url(site_url: str, permalink: str) -> str:
    """The guide page on the configured site, at the permalink's (validated) path."""
    return site_url.rstrip("/") + guide_path(permalink)


def is_other_maxroll_post(permalink: object) -> bool:
    """True for a plain https Maxroll URL outside /d3/guides/ (a resource or meta post).

    Such hits are not guides and are skipped quietly; anything else that is not a valid guide
    permalink is junk and is refused.
    """
    if not isinstance(permalink, str) or any(ch in permalink for ch in "\\@%\x00\r\n\t "):
        return False
    parts = urlsplit(permalink)
    return (
        parts.scheme == "https"
        and parts.netloc in MAXROLL_HOSTS
        and not parts.query
        and not parts.fragment
        and "/d3/guides" not in parts.path
        and ".." not in parts.path
    )
