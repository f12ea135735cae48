"""The staff pages in headless Chromium against the live server: signing in, a weight change
that lands in the audit log, live charts drawn from states published to the real Redis, the
usage explorer's CSV download, and the what-if replay."""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from billing import invoices as billing
from tenants.models import AuditEvent, Tenant
from tests.tenants.factories import make_plan, make_tenant
from tests.tenants.usage_data import request_at, roll_up, store
from workers import runtime

pytestmark = pytest.mark.django_db(transaction=True)  # the live server sees committed rows

USERNAME, PASSWORD = "admin", "admin-password"
WAIT_S = 10

# Colours of the first datasets (static/parity/common.js's palette), to find drawn data.
BLUE, GREEN, PURPLE = (37, 99, 235), (22, 163, 74), (147, 51, 234)

# Per chart: the datasets' sums (null when no chart is drawn on the canvas).
CHART_SUMS = """
const chart = Chart.getChart(document.getElementById(arguments[0]));
if (!chart) return null;
return chart.data.datasets.map(d => d.data.reduce((a, b) => a + (Number(b) || 0), 0));
"""
# Pixels of the canvas that are not transparent, and those close to a given colour.
CANVAS_PIXELS = """
const [id, rgb] = arguments;
const canvas = document.getElementById(id);
const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let painted = 0, coloured = 0;
for (let i = 0; i < pixels.length; i += 4) {
  if (pixels[i + 3] === 0) continue;
  painted++;
  const near = Math.abs(pixels[i] - rgb[0]) + Math.abs(pixels[i + 1] - rgb[1])
    + Math.abs(pixels[i + 2] - rgb[2]);
  if (near < 40) coloured++;
}
return [painted, coloured];
"""


# -- cast and helpers ------------------------------------------------------------------------


@pytest.fixture
def staff_user(transactional_db: None) -> Any:
    return get_user_model().objects.create_user(
        USERNAME, "admin@example.com", PASSWORD, is_staff=True, is_superuser=True
    )


@pytest.fixture
def acme(transactional_db: None) -> Tenant:
    return make_tenant("acme", plan=make_plan(name="Standard"))


@pytest.fixture
def globex(acme: Tenant) -> Tenant:
    return make_tenant("globex", weight=Decimal(3), plan=acme.plan)


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout_s: float = WAIT_S) -> Any:
    # A condition that reads the page while a form's answer replaces it can find an element
    # of the old page and read it from the new one (stale): that is "not yet", not a failure.
    return WebDriverWait(
        driver, timeout_s, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    ).until(condition)


def path_of(driver: Any) -> str:
    return urlsplit(driver.current_url).path


def fill_login_form(driver: Any) -> None:
    driver.find_element(By.ID, "id_username").send_keys(USERNAME)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()


@pytest.fixture
def signed_in(driver: Any, live_server: Any, staff_user: Any) -> Any:
    """The browser, signed in as staff through the admin's login form."""
    driver.get(f"{live_server.url}/admin/login/?next=/dashboard/tenants/")
    fill_login_form(driver)
    wait_for(driver, lambda d: path_of(d) == "/dashboard/tenants/")
    return driver


def open_page(driver: Any, live_server: Any, path: str) -> None:
    driver.get(live_server.url + path)
    assert path_of(driver) == path, f"{path} redirected to {driver.current_url}"


def text_of(driver: Any, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def chart_sums(driver: Any, canvas_id: str) -> list[float] | None:
    return driver.execute_script(CHART_SUMS, canvas_id)  # type: ignore[no-any-return]


def drawn_chart(driver: Any, canvas_id: str) -> list[float]:
    """Wait until the chart on `canvas_id` holds some non-zero data; return its sums."""
    return wait_for(driver, lambda d: (s := chart_sums(d, canvas_id)) and any(s) and s)


def canvas_pixels(driver: Any, canvas_id: str, rgb: tuple[int, int, int]) -> tuple[int, int]:
    painted, coloured = driver.execute_script(CANVAS_PIXELS, canvas_id, list(rgb))
    return painted, coloured


def script_errors(driver: Any) -> list[str]:
    """JavaScript errors in the console (failed requests are the tests' own business)."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]


# -- a worker publishing live state -------------------------------------------------------------


class FakeWorker:
    """Publishes `EngineHost.state()`-shaped states once a second to the real Redis, like an
    engine worker under load: acme (weight 1) is served 100 tokens/s, globex (weight 3) 300."""

    def __init__(self, name: str = "gpu-0:4242") -> None:
        self.name = name
        self.num_published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def state(self, at: float) -> dict[str, Any]:
        i = self.num_published
        tenants = {
            "acme": self._tenant(1.0, 60 * i, 40 * i, num_waiting=3, num_running=2),
            "globex": self._tenant(3.0, 200 * i, 100 * i, num_waiting=6, num_running=5),
        }
        scheduler = {
            "policy": "vtc",
            "timestamp": at,
            "num_waiting": 9,
            "num_running": 7,
            "kv_blocks_used": 180,
            "kv_blocks_total": 512,
            "weights_applied_at": at - 30,
            "tenants": tenants,
        }
        return {
            "worker": self.name,
            "model": "parity-tiny",
            "policy": "vtc",
            "slots": 1024,
            "num_in_flight": 16,
            "weights": {"acme": 1.0, "globex": 3.0},
            "scheduler": scheduler,
            "published_at": at,
        }

    @staticmethod
    def _tenant(weight: float, input_tokens: int, output_tokens: int, **counts: int) -> Any:
        finished = input_tokens // 60
        return {
            "weight": weight,
            "num_arrived": finished + 5,
            "num_admitted": finished + 2,
            "num_finished": finished,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "kv_block_steps": 12 * output_tokens,
            "counter": (input_tokens + 2 * output_tokens) / weight,
            **counts,
        }

    def publish(self, at: float) -> None:
        runtime.channels().publish_state(self.name, self.state(at))
        self.num_published += 1

    def start(self, history_s: int = 10) -> None:
        now = time.time()
        for seconds_ago in range(history_s - 1, -1, -1):
            self.publish(now - seconds_ago)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.publish(time.time())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def worker() -> Iterator[FakeWorker]:
    fake = FakeWorker()
    fake.start()
    yield fake
    fake.stop()


# -- the tests --------------------------------------------------------------------------------


def test_a_staff_user_signs_in_through_the_admin_login_form(
    driver, live_server, staff_user, screenshot
):
    driver.get(live_server.url + "/dashboard/")
    assert path_of(driver) == "/admin/login/"
    screenshot("login")
    fill_login_form(driver)
    wait_for(driver, lambda d: path_of(d) == "/dashboard/")
    assert text_of(driver, "h1") == "Live fairness"
    assert "Log out admin" in text_of(driver, ".topbar")


def test_a_weight_change_on_the_tenant_page_is_audited_and_shown(
    signed_in, live_server, acme, screenshot
):
    store(*(request_at(acme, timezone.now() - timedelta(hours=h)) for h in (1, 3, 3, 7)))
    roll_up()
    driver = signed_in
    open_page(driver, live_server, "/dashboard/tenants/acme/")
    assert drawn_chart(driver, "chart-tokens") == [400, 200]  # input, output tokens
    weight = driver.find_element(By.ID, "id_weight")
    weight.clear()
    weight.send_keys("0")
    driver.find_element(By.CSS_SELECTOR, "#weight-form [type=submit]").click()
    error = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#weight-form .errors"))
    assert "greater than 0" in error[0].text

    weight = driver.find_element(By.ID, "id_weight")
    weight.clear()
    weight.send_keys("4.5")
    driver.find_element(By.CSS_SELECTOR, "#weight-form [type=submit]").click()
    wait_for(driver, lambda d: "weight is now 4.5" in d.find_element(By.TAG_NAME, "main").text)
    assert text_of(driver, "#tenant-weight") == "4.5"
    row = text_of(driver, "#audit-table tbody tr:first-child")
    assert "admin" in row and "weight: 1.0000 → 4.5000" in row
    event = AuditEvent.objects.get(object_type="tenant", object_id=str(acme.pk))
    assert (event.actor_label, event.after["weight"]) == ("admin", "4.5000")
    screenshot("tenant")
    assert script_errors(driver) == []


def test_the_overview_draws_the_published_live_state(
    signed_in, live_server, acme, globex, worker, screenshot
):
    driver = signed_in
    open_page(driver, live_server, "/dashboard/")
    served, weights = drawn_chart(driver, "chart-share")
    assert served == pytest.approx(100) and weights == pytest.approx(100)
    shares = driver.execute_script(
        "return Chart.getChart(document.getElementById('chart-share')).data.datasets"
        ".map(d => d.data)"
    )
    assert shares[0] == pytest.approx([25, 75], abs=1)  # served: 100 vs 300 tokens/s
    assert shares[1] == pytest.approx([25, 75])  # weights 1 and 3
    assert drawn_chart(driver, "chart-queue") == [7, 9]  # running, waiting
    assert drawn_chart(driver, "chart-throughput")[0] > 0
    assert drawn_chart(driver, "chart-kv")[0] == 180

    for canvas_id, colour in [
        ("chart-share", BLUE),
        ("chart-queue", GREEN),
        ("chart-throughput", BLUE),
        ("chart-kv", PURPLE),
    ]:
        painted, coloured = canvas_pixels(driver, canvas_id, colour)
        assert painted > 2000, f"{canvas_id} is blank"
        assert coloured > 100, f"{canvas_id} draws no data in its first dataset's colour"
    assert not driver.find_element(By.ID, "live-empty").is_displayed()
    assert len(driver.find_elements(By.CSS_SELECTOR, "#live-tenants tbody tr")) == 2
    assert "gpu-0:4242" in text_of(driver, "#live-workers")
    screenshot("overview")
    assert script_errors(driver) == []


def test_the_overview_says_so_when_no_worker_publishes(signed_in, live_server, screenshot):
    driver = signed_in
    open_page(driver, live_server, "/dashboard/")
    notice = wait_for(
        driver, lambda d: (e := d.find_element(By.ID, "live-empty")).is_displayed() and e
    )
    assert "No engine worker is publishing state" in notice.text
    assert not driver.find_element(By.ID, "live-content").is_displayed()
    screenshot("overview-no-worker")


def test_the_usage_explorer_charts_usage_and_downloads_it_as_csv(
    signed_in, live_server, acme, globex, empty_downloads, screenshot
):
    two_hours_ago = timezone.now() - timedelta(hours=2)
    store(
        *(request_at(acme, two_hours_ago + timedelta(seconds=i)) for i in range(3)),
        request_at(globex, two_hours_ago, output_tokens=500),
    )
    roll_up()
    driver = signed_in
    open_page(driver, live_server, "/dashboard/usage/")
    wait_for(driver, lambda d: d.find_element(By.ID, "usage-results").get_attribute("data-loaded"))
    assert sorted(drawn_chart(driver, "chart-usage")) == [100, 300]  # input tokens per tenant
    table = text_of(driver, "#usage-table tbody")
    assert "acme" in table and "globex" in table
    screenshot("usage")

    driver.find_element(By.ID, "download-csv").click()
    path = wait_for(driver, lambda d: finished_download(empty_downloads))
    rows = list(csv.DictReader(path.open(newline="")))
    assert {"tenant", "input_tokens", "output_tokens"} <= set(rows[0])
    by_tenant = {row["tenant"]: row for row in rows}
    assert by_tenant["acme"]["input_tokens"] == "300"
    assert by_tenant["globex"]["output_tokens"] == "500"


def finished_download(directory: Path) -> Path | None:
    done = [p for p in directory.iterdir() if not p.name.endswith(".crdownload")]
    return done[0] if done and done[0].stat().st_size > 0 else None


def test_the_whatif_page_replays_a_proposal_and_shows_errors_by_the_form(
    signed_in, live_server, acme, globex, screenshot
):
    start = timezone.now() - timedelta(minutes=30)
    store(
        *(request_at(acme, start + timedelta(seconds=2 * i)) for i in range(20)),
        *(request_at(globex, start + timedelta(seconds=2 * i)) for i in range(20)),
    )
    driver = signed_in
    open_page(driver, live_server, "/dashboard/what-if/")
    proposed = driver.find_element(By.CSS_SELECTOR, "input[data-tenant=acme]")
    proposed.clear()
    proposed.send_keys("0")
    driver.find_element(By.ID, "whatif-run").click()
    errors = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".field-error"))
    assert errors[0].text

    proposed.clear()
    proposed.send_keys("9")
    driver.find_element(By.ID, "whatif-run").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "whatif-results").is_displayed())
    assert drawn_chart(driver, "chart-whatif-share")
    assert not driver.find_elements(By.CSS_SELECTOR, ".field-error")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#whatif-table tbody tr")) == 2
    screenshot("whatif")


def test_the_tenant_list_and_invoices_render(signed_in, live_server, acme, globex, screenshot):
    # Real usage, rolled up and priced: 2.5M output tokens at the Standard plan's 1.50 / 1M.
    store(request_at(acme, datetime(2026, 3, 10, tzinfo=UTC), output_tokens=2_500_000,
                     prompt_tokens=0, cached_tokens=0, kv_gib_seconds=0.0))  # fmt: skip
    roll_up()
    invoice = billing.generate(acme, billing.month(2026, 3))
    driver = signed_in
    open_page(driver, live_server, "/dashboard/tenants/")
    assert "globex" in text_of(driver, "#tenant-table")
    screenshot("tenants")
    open_page(driver, live_server, "/dashboard/invoices/")
    driver.find_element(By.LINK_TEXT, invoice.number).click()
    wait_for(driver, lambda d: path_of(d) == f"/dashboard/invoices/{invoice.pk}/")
    assert text_of(driver, "#invoice-total") == "3.75"
    assert "2,500,000 output tokens" in text_of(driver, "#invoice-lines")
    screenshot("invoice")
    open_page(driver, live_server, "/dashboard/invoices/")
    screenshot("invoices")
    assert script_errors(driver) == []
