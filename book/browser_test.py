"""The built book in a real browser: every page, offline.

    .venv-book/bin/python book/browser_test.py [build/book/_build/html]     # what `make book-test` runs

Serves the site on 127.0.0.1 (a free port) and drives Debian's headless Chromium (/usr/bin/chromium)
with Playwright over every page of the site. A page passes when
- it loads (HTTP 200) with no console error and no uncaught script error;
- every <img> has loaded (naturalWidth > 0);
- every equation was typeset by the MathJax shipped in the site: each Sphinx math element holds a
  rendered <mjx-container>, and no MathJax error node (<mjx-merror>, data-mjx-error) exists;
- every link to the site resolves: HTTP 200 for its page, and its #fragment names an id there;
and the whole run passes when, besides, no request left 127.0.0.1 (every request is recorded, and
one for another host is refused and counted) and the search page finds a word of the book.
It saves screenshots of the home page and of notebook 05's chapter in the site's parent folder
(build/book/screenshots/). It prints the pages checked, the counts, and exits 1 on any failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import sys
import threading
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))  # Debian's package
# Flags that let Chromium start headless here without calling home (see the machine notes).
FLAGS = ["--no-proxy-server", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--no-default-browser-check"]
SEARCH_WORD = "RoIAlign"  # a word the search must find (notebook 05 is about it)

WAIT_FOR_PAGE = """async () => {
    for (const img of document.images) { img.loading = "eager"; }
    await Promise.all([...document.images].map(img => img.complete ? null :
        new Promise(done => { img.addEventListener("load", done); img.addEventListener("error", done); })));
    if (document.querySelector(".math")) {
        const start = Date.now();
        while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
            if (Date.now() - start > 60000) { return "MathJax never started (60 s)"; }
            await new Promise(r => setTimeout(r, 50));
        }
        await MathJax.startup.promise;
    }
    return "";
}"""

INSPECT_PAGE = """() => {
    const images = [...document.images];
    const math = [...document.querySelectorAll(".math")];
    return {
        images: images.length,
        broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src")),
        math: math.length,
        rendered: document.querySelectorAll("mjx-container").length,
        unrendered: math.filter(m => !m.querySelector("mjx-container")).map(m => m.textContent.slice(0, 60)),
        // TeX errors become <mjx-merror data-mjx-error=...>; an undefined macro is drawn in red
        // (MathJax's noundefined extension), seen as <mtext mathcolor="red"> in the assistive MathML.
        errors: [...document.querySelectorAll("mjx-merror, [data-mjx-error]")].map(
            e => (e.getAttribute("data-mjx-error") || e.textContent).slice(0, 80)).concat(
            [...document.querySelectorAll('mjx-assistive-mml mtext[mathcolor="red"]')].map(
            e => "undefined macro " + e.textContent.slice(0, 60))),
        links: [...document.querySelectorAll("a[href]")].map(a => a.href),
        title: document.title,
    };
}"""


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def handle_one_request(self):
            try:
                super().handle_one_request()
            except (BrokenPipeError, ConnectionResetError):  # the browser moved on mid-file
                pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def site_pages(root: Path) -> list[str]:
    pages = [p.relative_to(root).as_posix() for p in root.rglob("*.html")]
    return sorted(p for p in pages if not p.startswith(("_static/", "_sources/", "_images/")))


def check_site(root: Path, shots: Path | None, search_word: str | None = SEARCH_WORD) -> tuple[list, dict]:
    """Drive Chromium over every page of the site at ROOT; return (failures, counts).
    failures: (check, what went wrong), where check is a page or 'links', 'search', 'responses', 'offline'."""
    from playwright.sync_api import sync_playwright

    server, base = serve(root)
    local = urlsplit(base).netloc
    pages = site_pages(root)
    failures: list[tuple[str, str]] = []
    requests: list[str] = []
    outside: list[str] = []
    failed_responses: list[str] = []
    images = equations = hits = 0
    links: dict[str, set[str]] = {}  # target page URL -> fragments linked to

    def route(route, request):
        if urlsplit(request.url).netloc == local:
            route.continue_()
        else:
            outside.append(request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
        context.route("**/*", route)
        context.on("request", lambda r: requests.append(r.url))
        context.on("response", lambda r: failed_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        context.set_default_timeout(120_000)  # a loaded 2-core machine: slow is not broken
        context.set_default_navigation_timeout(120_000)
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: console.append(f"uncaught: {e}"))
        for name in pages:
            console.clear()
            response = page.goto(base + name, wait_until="load")
            if response is None or response.status != 200:
                failures.append((name, f"HTTP {response.status if response else 'no response'}"))
                continue
            refresh = re.search(r'http-equiv="Refresh" content="\d+; url=([^"]+)"', (root / name).read_text(), re.I)
            if refresh:  # index.html forwards to the home page: follow it, then check what it shows
                page.wait_for_url(base + refresh.group(1))
            page.wait_for_load_state("load")
            waited = page.evaluate(WAIT_FOR_PAGE)
            if waited:
                failures.append((name, waited))
            info = page.evaluate(INSPECT_PAGE)
            images += info["images"]
            equations += info["rendered"]
            failures.extend((name, f"image not loaded: {src}") for src in info["broken"])
            failures.extend((name, f"equation not rendered: {text!r}") for text in info["unrendered"])
            failures.extend((name, f"MathJax error: {text!r}") for text in info["errors"])
            failures.extend((name, line) for line in console)
            for href in info["links"]:
                url, fragment = urldefrag(href)
                if urlsplit(url).netloc == local:
                    links.setdefault(url, set())
                    if fragment:
                        links[url].add(fragment)
            print(f"  {name:28s} {info['images']:3d} images {info['rendered']:4d} equations  {info['title']}")
            if shots is not None and name == "intro.html":
                page.screenshot(path=str(shots / "home.png"), full_page=True)
            if shots is not None and re.match(r"05_", name):
                page.screenshot(path=str(shots / f"{Path(name).stem}.png"))
                for selector, what in (("div.math", "equation"), (".cell_output img", "picture")):
                    if page.locator(selector).count():  # the first displayed equation / picture, mid-screen
                        page.evaluate(f"() => document.querySelector({selector!r}).scrollIntoView({{block: 'center'}})")
                        page.wait_for_timeout(500)
                        page.screenshot(path=str(shots / f"{Path(name).stem}_{what}.png"))

        if search_word:  # Sphinx's client-side search, offline
            console.clear()
            page.goto(base + f"search.html?q={search_word}", wait_until="load")
            try:
                page.wait_for_function("() => document.querySelectorAll('ul.search li').length > 0 || "
                                       "/did not match|no results/i.test(document.body.innerText)", timeout=120_000)
            except Exception as error:  # noqa: BLE001 (reported as a failure)
                failures.append(("search", f"no answer for {search_word!r}: {error}"))
            hits = page.locator("ul.search li").count()
            if hits == 0:
                failures.append(("search", f"{search_word!r} found nothing"))
            failures.extend(("search", line) for line in console)
            if shots is not None:
                page.screenshot(path=str(shots / "search.png"))
        browser.close()

    # Every link to the site: its page answers 200, and its fragment is an id on that page.
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    for url, fragments in sorted(links.items()):
        try:
            with direct.open(url, timeout=10) as answer:
                status, body = answer.status, answer.read().decode("utf-8", "replace")
        except Exception as error:  # noqa: BLE001 (an HTTP error is the finding)
            failures.append(("links", f"{url}: {error}"))
            continue
        if status != 200:
            failures.append(("links", f"{url}: HTTP {status}"))
            continue
        if fragments and url.endswith((".html", "/")):
            ids = _Ids()
            ids.feed(body)
            failures.extend(("links", f"{url}#{fragment}: no such id on that page")
                            for fragment in sorted(fragments - ids.ids))
    server.shutdown()
    failures.extend(("responses", f"HTTP {line}") for line in failed_responses)
    failures.extend(("offline", f"request left 127.0.0.1: {url}") for url in sorted(set(outside)))
    counts = {"pages": pages, "images": images, "equations": equations, "links": len(links),
              "anchors": sum(map(len, links.values())), "hits": hits, "requests": len(requests),
              "outside": outside}
    return failures, counts


def self_test() -> list[str]:
    """The checker must catch each kind of defect: run it on a small site with one of each planted."""
    import shutil
    import tempfile

    site = Path(__file__).resolve().parent.parent / "build/book/_build/html"
    png = next(iter(sorted((site / "_images").glob("*.png"))), None)
    mathjax = site / "_static" / "mathjax"
    if png is None or not mathjax.exists():
        return ["self-test needs a built book (its MathJax and one picture)"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(mathjax, root / "_static" / "mathjax")
        shutil.copy2(png, root / "good.png")
        head = '<html><head><script defer src="_static/mathjax/tex-chtml.js"></script></head><body>'
        (root / "index.html").write_text(head + r'<p>\(x^2\)</p><img src="good.png"><a href="index.html">me</a></body></html>')
        (root / "bad.html").write_text(
            head + r'<p>\(\nosuchmacro x\)</p><p>\(\frac{a}\)</p><span class="math">\(\frac{a}{\)</span><img src="missing.png"><script>console.error("planted")</script>'
            '<script src="https://cdn.jsdelivr.net/npm/planted.js"></script>'
            '<a href="nowhere.html">404</a><a href="index.html#no-such-id">anchor</a></body></html>')
        failures, counts = check_site(root, shots=None, search_word=None)
    text = "\n".join(f"{check}: {line}" for check, line in failures)
    expected = {
        "an image that did not load": "bad.html: image not loaded: missing.png",
        "a TeX error": "bad.html: MathJax error: 'Missing argument",
        "an undefined macro": "bad.html: MathJax error: 'undefined macro ",
        "an equation left as TeX": "bad.html: equation not rendered",
        "a console error": "bad.html: console.error: planted",
        "a request leaving 127.0.0.1": "offline: request left 127.0.0.1: https://cdn.jsdelivr.net/npm/planted.js",
        "a broken link": "nowhere.html: HTTP Error 404",
        "a missing anchor": "#no-such-id: no such id on that page",
    }
    missed = [f"self-test: the checker missed {what} ({needle!r})" for what, needle in expected.items() if needle not in text]
    if any(check == "index.html" for check, _ in failures) or counts["equations"] < 1:
        missed.append(f"self-test: the clean page failed or its equation was not counted:\n{text}")
    return missed


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else Path(__file__).resolve().parent.parent / "build/book/_build/html").resolve()
    if not (root / "index.html").exists():
        print(f"book-test: no site at {root} (run `make book`)", file=sys.stderr)
        return 1
    if not CHROMIUM.exists():
        print(f"book-test: {CHROMIUM} is missing (apt-get install chromium)", file=sys.stderr)
        return 1
    start = time.perf_counter()
    print("book-test: self-test (a small site with one planted defect of each kind)")
    missed = self_test()
    for line in missed:
        print(line, file=sys.stderr)
    if missed:
        return 1
    print("book-test: the checker caught every planted defect")
    shots = root.parent.parent / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    failures, counts = check_site(root, shots)
    pages = counts["pages"]
    print(f"pages checked ({len(pages)}): {', '.join(pages)}")
    print(f"images loaded: {counts['images']}")
    print(f"equations rendered: {counts['equations']}")
    print(f"internal links checked: {counts['links']} pages, {counts['anchors']} anchors")
    print(f"search for {SEARCH_WORD!r}: {counts['hits']} results")
    print(f"requests: {counts['requests']}, outside 127.0.0.1: {len(counts['outside'])}")
    for url in sorted(set(counts["outside"])):
        print(f"  outside request: {url}")
    print(f"screenshots: {', '.join(sorted(p.name for p in shots.glob('*.png')))} in {shots}")
    print(f"book-test: {time.perf_counter() - start:.0f} s")
    # One check per page, plus the site-wide ones: links, search, every response < 400, offline.
    checks = pages + ["links", "search", "responses", "offline"]
    failed = {check for check, _ in failures}
    if failures:
        print(f"book-test FAILED: {len(failures)} problems", file=sys.stderr)
        for check, line in failures[:200]:
            print(f"  {check}: {line}", file=sys.stderr)
    print(f"book-test: {len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
