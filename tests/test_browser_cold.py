"""In a real browser: a deep link to a freshly started server shows the app's navigation and the page's title at once,
and never Streamlit's legacy navigation built from the pages/ folder's file names."""
import re
import time

import pytest

from conftest import BROWSER, ROOT, SHOTS, app_server, digits_npz

pytestmark = BROWSER
LEGACY = {"app", *(p.stem for p in (ROOT / "pages").glob("*.py"))}  # the names Streamlit gives pages/ files
# Records, from the first byte of the page on, every sidebar navigation label and the first time each heading shows,
# so that a navigation that is drawn for a moment between two polls is seen too.
WATCH = """
window.__seen = {labels: [], headings: {}, app: null};
new MutationObserver(() => {
  const now = performance.now();
  if (window.__seen.app === null && document.querySelector("[data-testid='stApp']")) window.__seen.app = now;
  for (const a of document.querySelectorAll("[data-testid='stSidebarNav'] [data-testid='stSidebarNavLink'] span"))
    if (!window.__seen.labels.includes(a.innerText)) window.__seen.labels.push(a.innerText);
  for (const h of document.querySelectorAll("h1"))
    if (!(h.innerText in window.__seen.headings)) window.__seen.headings[h.innerText] = now;
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


@pytest.mark.parametrize("path, title, width", [("predict", "Predict", 1400), ("runs", "Runs", 900)])
def test_a_deep_link_on_a_cold_server_paints_the_real_page_at_once(tmp_path, page, path, title, width):
    digits_npz(tmp_path / "data", name="mnist", n_train=50, n_test=20)
    with app_server(tmp_path / "runs", tmp_path / "data") as url:
        page.set_viewport_size({"width": width, "height": 900})
        page.add_init_script(WATCH)
        start = time.time()
        page.goto(f"{url}/{path}", wait_until="commit")  # the server's first session: no page has run yet
        for at in (0.3, 1, 2, 4):  # what a user sees while it loads
            page.wait_for_function(f"() => performance.now() >= {at * 1000}")
            page.screenshot(path=SHOTS / f"cold-{path}-{at:g}s-{width}.png")
        page.get_by_role("heading", name=title, exact=True).wait_for()
        page.locator("[data-testid='stSidebarNav']").get_by_text("Home", exact=True).wait_for()
        seen = page.evaluate("window.__seen")
    print(f"cold /{path}: app shell at {seen['app']:.0f} ms, title at {seen['headings'][title]:.0f} ms "
          f"after the request ({time.time() - start:.1f} s in all)")
    assert not LEGACY & set(seen["labels"]), seen["labels"]  # no lowercase file-name link, ever
    assert {"Home", "Architectures", "Predict", "Runs"} <= set(seen["labels"])
    # the title within 2.5 s of the app's shell (chromium's own start of the page is not the app's doing)
    assert seen["headings"][title] - seen["app"] < 2500, seen
    assert not [h for h in seen["headings"] if re.fullmatch(r"[a-z_]+", h)], seen["headings"]
