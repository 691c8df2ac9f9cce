"""Maxroll: the async client, the document parsers and the item catalog."""

from __future__ import annotations

from d3_item_salvager.maxroll.catalog import ItemCatalog, parse_item_catalog
from d3_item_salvager.maxroll.client import Fetched, MaxrollClient, Validators
from d3_item_salvager.maxroll.gateway import MaxrollGateway
from d3_item_salvager.maxroll.guide_parser import GuidePlanners, parse_guide_planners
from d3_item_salvager.maxroll.models import (
    BuildRecord,
    CatalogItem,
    GuideRecord,
    ItemUsage,
    PlannerProfile,
)
from d3_item_salvager.maxroll.profile_parser import parse_planner_profile
from d3_item_salvager.maxroll.search_parser import SearchPage, parse_search_page

__all__ = [
    "BuildRecord",
    "CatalogItem",
    "Fetched",
    "GuidePlanners",
    "GuideRecord",
    "ItemCatalog",
    "ItemUsage",
    "MaxrollClient",
    "MaxrollGateway",
    "PlannerProfile",
    "SearchPage",
    "Validators",
    "parse_guide_planners",
    "parse_item_catalog",
    "parse_planner_profile",
    "parse_search_page",
]
