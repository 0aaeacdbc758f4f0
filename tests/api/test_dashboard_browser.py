"""The dashboard in headless Chromium (Debian's /usr/bin/chromium driven by Playwright's sync
API; no browser is ever downloaded) against the real control plane: `pdistill serve` (uvicorn)
on 127.0.0.1 with a SQLite store, a real local Ray head running the campaigns, MLflow on
SQLite. Nothing is mocked. One tiny campaign (one round, 2 → 1 steps, a two-trial LR search) is
followed to the end from its page; a second, long one, started beside it, is cancelled from its
page.

Screenshots are kept in runs/test-artifacts/dashboard/ (git-ignored); their paths are printed
at the end of the module."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_harness import TINY, ApiServer, api_env
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from orchestrator import ray_head
from orchestrator.store import Store

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "runs" / "test-artifacts" / "dashboard"
# The tiny campaign searches its LR too (two 5-update trials), so the page has trials to plot.
SHOWN = TINY | {
    "name": "dash-tiny",
    "tune": {"enabled": True, "trials": 2, "trial_updates": 5, "lr_min": 5e-5, "lr_max": 2e-4},
    "distill": {"updates": 20, "batch_size": 16, "checkpoint_every": 5},  # 3 loss points
}
# Cancelled from its page long before it could finish.
LONG = TINY | {"name": "dash-cancel", "distill": {"updates": 5000, "checkpoint_every": 20}}
CAMPAIGN_MS = 600_000  # the tiny campaign, start to finish, on 2 busy cores
expect.set_options(timeout=15_000)


@dataclass
class Stack:
    server: ApiServer
    token: str
    shown: str  # the tiny campaign, submitted when the stack starts
    long: str  # the campaign to cancel, submitted beside it (the cluster runs both)
    shots: list[Path] = field(default_factory=list)

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def get(self, path: str) -> Any:
        with self.http() as h:
            r = h.get(path)
            r.raise_for_status()
            return r.json()

    def submit(self, spec: dict[str, Any]) -> str:
        with self.http() as h:
            r = h.post("/v1/campaigns", json=spec)
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

    def shot(self, page: Page, name: str) -> None:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest,
    ray_head_proc: ray_head.Head,
    cache_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboard")
    env = api_env(
        tmp=tmp,
        database_url=f"sqlite:///{tmp / 'store.db'}",
        head=ray_head_proc,
        storage_uri=str(tmp / "storage"),
        cache_dir=cache_dir,
    )
    with Store.from_url(env["PDISTILL_DATABASE_URL"]) as store:
        team = store.create_team("vision", gpu_quota=0)
        token, _ = store.create_token(team.id, "browser")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = ApiServer(env, tmp / "serve.log")
    server.start()
    try:
        stack = Stack(server, token, "", "")
        # Both run while the first tests log in and list.
        stack.shown = stack.submit(SHOWN)
        stack.long = stack.submit(LONG)
        yield stack
    finally:
        server.stop()
        # Shown even when pytest captures output (-q): where to look at the pages.
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print("\ndashboard screenshots:", *(f"  {p}" for p in stack.shots), sep="\n")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"the browser tests need Debian's chromium at {CHROMIUM} (apt install chromium)"
        )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(
        base_url=stack.server.url, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
        assert not errors, f"uncaught errors in the page: {errors}"
    finally:
        stack.shot(page, f"last-{request.node.name}")  # the state the test ended in
        context.close()


def login(page: Page, token: str) -> None:
    page.goto("/#/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Campaigns")


def stored_token(page: Page) -> str | None:
    value = page.evaluate("() => localStorage.getItem('pdistill.token')")
    return None if value is None else str(value)


# -- tests ---------------------------------------------------------------------------------------
def test_a_wrong_token_is_refused_with_a_clear_message(page: Page, stack: Stack) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"#/login$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
    page.get_by_label("API token").fill("pd_" + secrets.token_urlsafe(16))
    page.get_by_role("button", name="Log in").click()
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("This token was refused: unknown or revoked token")
    expect(page.get_by_label("API token")).to_have_attribute("aria-invalid", "true")
    assert stored_token(page) is None
    stack.shot(page, "01-login-refused")


def test_login_lists_campaigns_filters_and_logs_out(page: Page, stack: Stack) -> None:
    login(page, stack.token)
    assert stored_token(page) == stack.token
    expect(page.locator("#who-name")).to_have_text("team vision")
    row = page.locator(f"tr[data-campaign-id='{stack.shown}']")
    expect(row).to_contain_text("dash-tiny")
    expect(row.locator("[data-col=round]")).to_have_text(re.compile(r"^[01]/1$"))
    expect(row.locator("progress")).to_have_count(1)
    stack.shot(page, "02-campaigns")

    page.get_by_label("Status").select_option("cancelled")
    expect(page).to_have_url(re.compile(r"#/campaigns\?status=cancelled$"))
    expect(page.get_by_text("No campaigns with status cancelled.")).to_be_visible()
    expect(row).to_have_count(0)
    page.get_by_label("Status").select_option("")
    expect(row).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
    expect(page.get_by_role("status")).to_have_text("Logged out.")
    assert stored_token(page) is None
    page.goto("/#/campaigns")
    expect(page).to_have_url(re.compile(r"#/login$"))


def test_a_running_campaign_is_cancelled_from_its_page(page: Page, stack: Stack) -> None:
    cid = stack.long
    # Break the event stream on its way to the browser (as a buffering proxy would): the page
    # must fall back to polling and still see every change without a reload.
    page.route("**/events", lambda route: route.abort("connectionreset"))
    # A link to the campaign (as `pdistill demo` prints) leads there once the reader logs in.
    page.goto(f"/#/campaigns/{cid}")
    expect(page).to_have_url(re.compile(r"#/login$"))
    page.get_by_label("API token").fill(stack.token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(f"#/campaigns/{cid}$"))
    expect(page.locator("#live-mode")).to_have_attribute("data-mode", "polling")
    status = page.locator("#campaign-status")
    expect(status).to_have_text("running", timeout=300_000)
    expect(page.get_by_role("button", name="Resume")).to_be_hidden()
    stack.shot(page, "03-campaign-running")
    # A round or a teacher that evaluates shows how many of its samples are drawn. This campaign
    # is cancelled long before it evaluates: its teacher and rounds reach the page as the API
    # sends them, but evaluating.
    drawn, samples = 16, TINY["evaluation"]["samples"]

    def teacher_evaluating(route: Route) -> None:
        c = route.fetch().json()
        route.fulfill(
            json=c | {"teacher": c["teacher"] | {"fid": None, "eval_samples_done": drawn}}
        )

    def round_evaluating(route: Route) -> None:
        first, *rest = route.fetch().json()
        route.fulfill(json=[{**first, "status": "evaluating", "eval_samples_done": drawn}, *rest])

    served = {f"**/v1/campaigns/{cid}": teacher_evaluating}
    served[f"**/v1/campaigns/{cid}/rounds"] = round_evaluating
    for url, handler in served.items():
        page.route(url, handler)
    evaluating = page.locator("#rounds tr[data-round='1'] [data-eval]")
    expect(evaluating).to_have_text(f"{drawn} / {2 * samples} samples")  # student's and DDIM's
    expect(page.locator("#teacher-fid")).to_have_text(f"evaluating: {drawn} / {samples} samples")
    for url in served:
        page.unroute(url)
    expect(evaluating).to_have_count(0)
    expect(page.locator("#teacher-fid")).to_have_text("—")

    page.get_by_role("button", name="Cancel campaign").click()
    expect(page.get_by_role("group", name="Confirm cancel")).to_be_visible()
    page.get_by_role("button", name="Yes, cancel it").click()
    expect(status).to_have_text("cancelled", timeout=120_000)
    expect(page.get_by_role("button", name="Resume")).to_be_enabled()
    expect(page.locator("#live-mode")).to_have_attribute("data-mode", "final")
    expect(page.get_by_role("button", name="Cancel campaign")).to_be_hidden()
    expect(page.locator("p.reason")).to_have_text("cancelled by team:vision")
    # Its history: who moved it, and why.
    expect(page.locator("#history li").first).to_contain_text("submitted: queued by team:vision")
    expect(page.locator("#history li[data-to='running']")).to_contain_text(
        "starting → running by driver"
    )
    expect(page.locator("#history li[data-to='cancelled']")).to_contain_text(
        ": cancelled by team:vision"
    )
    expect(page.locator("#rounds tr[data-round='1'] [data-col=student]")).to_have_text("—")
    c = stack.get(f"/v1/campaigns/{cid}")
    assert (c["status"], c["reason"]) == ("cancelled", "cancelled by team:vision")
    stack.shot(page, "04-campaign-cancelled")

    # Resume queues it again and the page follows it again; then it is cancelled for good.
    page.get_by_role("button", name="Resume").click()
    expect(status).to_have_text(re.compile(r"^(queued|starting|running)$"))
    expect(page.locator("#live-mode")).to_have_attribute("data-mode", "polling")
    page.get_by_role("button", name="Cancel campaign").click()
    page.get_by_role("button", name="Yes, cancel it").click()
    expect(status).to_have_text("cancelled", timeout=120_000)

    page.get_by_role("link", name="← Campaigns").click()
    page.get_by_label("Status").select_option("cancelled")
    expect(page.locator(f"tr[data-campaign-id='{cid}']")).to_contain_text("cancelled")
    expect(page.locator(f"tr[data-campaign-id='{stack.shown}']")).to_have_count(0)


def test_campaign_page_follows_the_campaign_live_to_fids_charts_and_samples(
    page: Page, stack: Stack
) -> None:
    login(page, stack.token)
    page.locator(f"tr[data-campaign-id='{stack.shown}'] a").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("dash-tiny")
    page.evaluate("() => { window.notReloaded = true; }")
    status = page.locator("#campaign-status")
    # Live from the stream while it runs ("final" only if it finished meanwhile: a race).
    expect(page.locator("#live-mode")).to_have_attribute("data-mode", re.compile("^(live|final)$"))
    # Followed live from the event stream: no reload. (Any final status ends the wait: a failed
    # campaign fails the test at once, with its reason.)
    expect(status).to_have_text(re.compile(r"^(succeeded|failed|cancelled)$"), timeout=CAMPAIGN_MS)
    c = stack.get(f"/v1/campaigns/{stack.shown}")
    assert c["status"] == "succeeded", c["reason"]
    assert page.evaluate("() => window.notReloaded === true")
    expect(page.locator("#live-mode")).to_have_attribute("data-mode", "final")
    t = c["teacher"]
    loss = page.evaluate("(v) => String(Number(v.toPrecision(4)))", t["loss"])
    expect(page.locator("#teacher")).to_have_text(
        f"ready {t['updates']:,} / {t['updates']:,} updates · loss {loss}"
    )
    # Its FID at its own steps: what the students are distilled from.
    assert t["fid"] is not None and t["steps"] == 2, t
    expect(page.locator("#teacher-fid")).to_have_text(f"{t['fid']:.2f} at 2 steps")
    # Where the teacher is kept, for a new campaign's teacher.checkpoint.
    assert t["checkpoint_uri"], t
    expect(page.locator("#teacher-uri")).to_have_text(t["checkpoint_uri"])

    (api_round,) = stack.get(f"/v1/campaigns/{stack.shown}/rounds")
    row = page.locator("#rounds tr[data-round='1']")
    expect(row.locator("[data-col=steps]")).to_have_text("2 → 1")
    expect(row.locator("[data-col=status]")).to_have_text("succeeded")
    expect(row.locator("[data-col=updates]")).to_have_text("20 / 20")
    expect(row.locator("[data-col=fid]")).to_have_text(f"{api_round['fid']:.2f}")
    expect(row.locator("[data-col=ddim-fid]")).to_have_text(f"{api_round['ddim_fid']:.2f}")
    lr = f"{api_round['lr']:.1e}".replace("e-0", "e-")
    expect(row.locator("[data-col=lr]")).to_have_text(lr)
    expect(row.locator("[data-col=gpu-hours]")).to_have_text("0.00")
    # The student, downloaded with the token: the same file the API serves.
    with page.expect_download() as got:
        row.get_by_role("button", name="Download the round 1 student (1-step sampling)").click()
    name = f"{stack.shown}-dash-tiny-round-1-1-step.safetensors"
    assert got.value.suggested_filename == name
    with stack.http() as h:
        served = h.get(api_round["student_url"])
    assert served.status_code == 200 and Path(got.value.path()).read_bytes() == served.content
    # The teacher likewise, from the campaign's facts.
    with page.expect_download() as got:
        page.get_by_role("button", name="Download the teacher").click()
    assert got.value.suggested_filename == f"{stack.shown}-dash-tiny-teacher-2-step.safetensors"
    with stack.http() as h:
        served = h.get(t["checkpoint_url"])
    assert served.status_code == 200 and Path(got.value.path()).read_bytes() == served.content

    # FID vs steps: the round's student at 1 step; DDIM at 1 step and the teacher's own 2.
    fid = page.locator("#fid-chart svg.chart")
    expect(fid.locator("g.series[data-series='distilled student'] .point")).to_have_count(1)
    expect(fid.locator("g.series[data-series='DDIM teacher'] .point")).to_have_count(2)
    # Loss curve: a path through the logged points.
    loss_path = page.locator("#loss-charts figure[data-loss-round='1'] path.series-line")
    expect(loss_path).to_have_count(1)
    assert re.fullmatch(r"M[\d.]+,[\d.]+(L[\d.]+,[\d.]+)+", loss_path.get_attribute("d") or "")
    # The teacher's own curve comes first: its 30 updates log one point (every 50, and the last).
    first_loss = page.locator("#loss-charts figure").first
    expect(first_loss).to_have_attribute("data-loss-round", "teacher")
    expect(first_loss.locator("g.series[data-series='teacher'] .point")).to_have_count(1)
    # The LR search: both trials plotted, the chosen one highlighted.
    trials = page.locator("#trials figure[data-trials-round='1']")
    expect(trials.locator("g.series .point")).to_have_count(2)
    expect(trials.locator("g.series .point.highlight")).to_have_count(1)
    # The sample grid, fetched with the token and shown from a blob: URL.
    img = page.locator("#samples figure[data-samples-round='1'] img")
    expect(img).to_have_attribute("src", re.compile(r"^blob:"))
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    # The teacher's grid first, from the same noise: the quality the students are distilled from.
    first = page.locator("#samples figure").first
    expect(first).to_have_attribute("data-samples-round", "teacher")
    expect(first.locator("figcaption")).to_have_text(f"Teacher: 2 steps (DDIM), FID {t['fid']:.2f}")
    img = first.locator("img")
    expect(img).to_have_attribute("src", re.compile(r"^blob:"))
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    expect(page.locator("#ray-link")).to_have_attribute("href", re.compile(r"/#/jobs/pdistill-"))
    # A succeeded campaign can be neither cancelled nor resumed: no action is offered.
    expect(page.locator("#cancel, #resume")).to_have_count(2)
    expect(page.locator(".actions button:visible")).to_have_count(0)
    stack.shot(page, "05-campaign-succeeded")


def test_cluster_page_shows_the_nodes_and_the_demand(page: Page, stack: Stack) -> None:
    login(page, stack.token)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Cluster").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Cluster")
    expect(page.locator("#nodes tbody tr")).to_have_count(1)
    expect(page.locator("#nodes tbody tr")).to_contain_text("alive")
    expect(page.locator("#cpus")).to_contain_text("of 2 in use")
    expect(page.locator("#demand tr[data-demand=queued]")).to_be_visible()
    # One `ray start --head` without a group label: its group is the fallback "head".
    expect(page.locator("#groups tbody tr")).to_have_count(1)
    expect(page.locator("#groups tr[data-group=head]")).to_contain_text("head")
    expect(page.locator("#groups tfoot tr[data-pending]")).to_be_visible()
    expect(page.locator("#nodes tbody tr")).to_contain_text("head")
    stack.shot(page, "06-cluster")
