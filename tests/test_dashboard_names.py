"""The names in a real browser (Debian's Chromium): why a track was named (similarity, lead, faces that agreed,
"narrow" when the lead is small), a person's negative evidence on their page, and taking a negative face back."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from store import open_store
from store.config import GalleryConfig, LocalStoreConfig
from store.types import EventRecord
from tests.browser import BrowserMissing, chromium
from tests.test_dashboard_browser import shot
from tests.test_dashboard_api import PASSWORD, _event, _face, site  # noqa: F401 - the seeded site fixture

pytestmark = pytest.mark.slow


def browser_or_skip():
    try:
        return chromium()
    except BrowserMissing as exc:
        pytest.skip(str(exc))


def test_why_a_track_was_named_and_the_negative_evidence_of_a_person(site):
    now = time.time()
    with open_store(LocalStoreConfig(path=site["dir"]), GalleryConfig()) as store:
        wide = replace(_event("track_identified", 30, "Ann", now, similarity=0.97), margin=0.08, votes=3)
        narrow = replace(_event("track_identified", 31, "Ann", now + 1, similarity=0.951), margin=0.012, votes=2)
        store.events.append([EventRecord(wide), EventRecord(narrow)])
        (negative,) = store.negatives.add("Ann", [_face(9)])
    base = f"http://127.0.0.1:{site['port']}"
    with browser_or_skip() as browser:
        context = browser.new_context(base_url=base)
        page = context.new_page()
        page.goto("/login")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/live")
        page.goto("/recognitions")
        page.wait_for_selector("#events tbody tr")
        why = {int(row.query_selector_all("td")[7].inner_text()): row.query_selector_all("td")[5].inner_text()
               for row in page.query_selector_all("#events tbody tr[data-type=track_identified]")}
        assert "lead 0.080 over the next person or visitor" in why[30] and "3 face(s) agreed" in why[30]
        assert "narrow" not in why[30]
        assert why[31].startswith("narrow") and "lead 0.012" in why[31]
        shot(page, "why")
        page.goto("/identity/Ann")
        page.wait_for_selector(f"#negatives figure[data-face='{negative}']")
        assert page.is_visible("#negatives-section")
        shot(page, "negatives")
        page.click(f"#negatives figure[data-face='{negative}'] button.remove-negative")
        page.wait_for_selector("#negatives-section", state="hidden")
        context.close()
    with open_store(LocalStoreConfig(path=site["dir"]), GalleryConfig()) as store:
        assert store.negatives.faces_of("Ann") == []
        (record,) = [r for r in store.audit.list() if r.action == "remove_negative"]
        assert record.subject == "Ann" and "alice" in record.actor
