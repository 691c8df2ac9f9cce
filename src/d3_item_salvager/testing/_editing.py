"""Changing what a running fake Maxroll serves: guides, planner profiles and item names.

Edits behave as they do on the real site: editing a guide bumps its `post_modified_unix`, while
editing a planner profile or renaming an item does not (only the document and its ETag change).
Make edits between runs; a run in progress may see a half-applied edit, as it could on Maxroll.
"""

from __future__ import annotations

import threading
from typing import Any

from d3_item_salvager.testing.fake_site import (
    CLASS_SLUGS,
    GEAR_SLOTS,
    TYPE_FOR_SLOT,
    Guide,
    Planner,
    Site,
)


def _first_item_of_type(site: Site, item_type: str) -> str:
    for record in site.catalog:
        if record.get("type") == item_type:
            return str(record["id"])
    raise LookupError(f"the catalog has no item of type {item_type!r}")


class SiteEditing:
    """Methods of `FakeMaxroll` that change its site; each takes the server's lock."""

    site: Site
    lock: threading.Lock

    # Guides

    def add_guide(
        self,
        class_name: str = "wizard",
        *,
        planners: int = 1,
        title: str | None = None,
        slug: str | None = None,
    ) -> Guide:
        """Publish a new guide with `planners` new planner profiles in its Variants section."""
        if class_name not in CLASS_SLUGS:
            raise ValueError(f"unknown class {class_name!r}; one of {sorted(CLASS_SLUGS)}")
        with self.lock:
            site = self.site
            guide_id = max((guide.guide_id for guide in site.guides), default=999) + 1
            variant_ids = [self._new_planner_id(site, class_name) for _ in range(planners)]
            core = self._new_planner_id(site, class_name)
            guide = Guide(
                guide_id=guide_id,
                slug=slug or f"guide-{guide_id}-{class_name}-build-guide",
                title=title or f"Guide {guide_id} {class_name.title()}",
                class_name=class_name,
                modified_unix=1_760_000_000 + guide_id,
                variant_planners=variant_ids,
                core_planner=core,
                follower_planners=[],
                altar_planner=str(650_000_000 + guide_id),
            )
            site.guides.append(guide)
            return guide

    def edit_guide(self, slug: str, **changes: Any) -> Guide:
        """Change a guide's fields (title, variant_planners, ...); its modified time moves on.

        Raises:
            KeyError: no guide has this slug.
        """
        with self.lock:
            guide = self._guide(slug)
            for name, value in changes.items():
                if not hasattr(guide, name):
                    raise AttributeError(f"a guide has no field {name!r}")
                setattr(guide, name, value)
            if "modified_unix" not in changes:
                guide.modified_unix += 1
            return guide

    def remove_guide(self, slug: str) -> Guide:
        """Unpublish a guide: it leaves the search results and its page answers 404."""
        with self.lock:
            guide = self._guide(slug)
            self.site.guides.remove(guide)
            return guide

    # Planner profiles

    def add_planner(self, class_name: str = "wizard", *, profiles: int = 1) -> str:
        """A new planner document with `profiles` profiles; returns its planner id."""
        with self.lock:
            return self._new_planner_id(self.site, class_name, profiles)

    def set_profile_item(self, planner_id: str, profile: int, slot: str, item_id: str) -> None:
        """Put `item_id` in one gear slot of one profile; the guide's modified time stays."""
        if slot not in GEAR_SLOTS:
            raise ValueError(f"unknown gear slot {slot!r}; one of {list(GEAR_SLOTS)}")
        with self.lock:
            planner = self._planner(planner_id)
            planner.profiles[profile]["items"][slot] = {"id": item_id, "stats": {}, "gems": []}

    def rename_build(self, planner_id: str, profile_index: int, name: str) -> None:
        """Rename one build (profile `profile_index` of the planner); the guide's modified time
        stays, as when an author edits a planner on Maxroll.

        Raises:
            KeyError: no planner has this id.
            IndexError: the planner has no such profile.
        """
        with self.lock:
            profiles = self._planner(planner_id).profiles
            if not 0 <= profile_index < len(profiles):
                raise IndexError(
                    f"planner {planner_id!r} has {len(profiles)} profiles; no {profile_index}"
                )
            profiles[profile_index]["name"] = name

    def remove_planner(self, planner_id: str) -> Planner:
        """Delete a planner document: its profile URL answers 404 from now on."""
        with self.lock:
            planner = self._planner(planner_id)
            del self.site.planners[planner_id]
            return planner

    # Items

    def rename_item(self, item_id: str, name: str) -> None:
        """Rename an item in data.json (its ETag changes with it)."""
        with self.lock:
            for record in self.site.catalog:
                if record["id"] == item_id:
                    record["name"] = name
                    return
        raise KeyError(f"no item {item_id!r} in the catalog")

    # Helpers (called with the lock held)

    def _guide(self, slug: str) -> Guide:
        guide = self.site.guide_by_slug(slug)
        if guide is None:
            raise KeyError(f"no guide with slug {slug!r}")
        return guide

    def _planner(self, planner_id: str) -> Planner:
        try:
            return self.site.planners[planner_id]
        except KeyError:
            raise KeyError(f"no planner {planner_id!r}") from None

    @staticmethod
    def _new_planner_id(site: Site, class_name: str, profiles: int = 1) -> str:
        planner_id = str(max((int(pid) for pid in site.planners), default=400_000_000) + 1)
        items = {
            slot: {"id": _first_item_of_type(site, TYPE_FOR_SLOT[slot]), "stats": {}, "gems": []}
            for slot in GEAR_SLOTS
        }
        documents = [
            {
                "name": f"Variant {number}",
                "class": class_name,
                "seasonal": 0,
                "items": dict(items),
                "kanai": {},
                "follower": None,
                "followerItems": {},
                "followerSkills": [None, None, None, None],
            }
            for number in range(profiles)
        ]
        site.planners[planner_id] = Planner(planner_id, class_name, documents)
        return planner_id
