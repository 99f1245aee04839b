"""`mnistctl serve` as users meet it: a real server process on 127.0.0.1, real HTTP, signals, and the page
drawn on in a real browser (Debian's chromium, driven by selenium)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import MNISTCTL_SCRIPT, mnist_like

from mnistctl.serve import RESTART_AFTER

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install '.[serve]')")
pytestmark = pytest.mark.xdist_group("serve")  # one server and one browser for the module

URL_LINE = re.compile(r"Serving .* at (http://127\.0\.0\.1:\d+/)")


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: list[str]  # stderr lines, as they come

    def post(self, path: str, body: bytes, content_type: str = "image/png") -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path.lstrip("/"), body, {"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_for_log(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := next((line for line in self.log if re.search(pattern, line)), None):
                return found
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r} in {self.log}")

    def wait_for_startups(self, count: int, timeout: float = 120) -> None:
        """Until ``count`` server processes (this one and its workers, replacements too) have started."""
        deadline = time.monotonic() + timeout
        while sum("Application startup complete" in line for line in self.log) < count:
            assert time.monotonic() < deadline and self.proc.poll() is None, self.log
            time.sleep(0.05)


def start_server(*args: str, session: bool = False) -> Server:
    """The server, started with ``args``; with ``session``, in a process group of its own (as at a terminal)."""
    proc = subprocess.Popen(
        [MNISTCTL_SCRIPT, "serve", "--port", "0", "--device", "cpu", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=session,
    )  # fmt: skip
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if match := next((URL_LINE.search(line) for line in log if URL_LINE.search(line)), None):
            return Server(proc, match.group(1), log)
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the server did not start: {log}")


def stop(server: Server) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    return server.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = start_server()
    yield s
    stop(s)


def digit_png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(mnist_like()).save(out, "PNG")
    return out.getvalue()


def test_it_answers_and_logs_one_line_per_request(server):
    status, body = server.post("/v1/digit", digit_png())
    assert status == 200 and set(body) == {"digit", "confidence", "probabilities", "not_a_digit"}
    server.wait_for_log(r'"POST /v1/digit HTTP/1.1" 200')
    status, body = server.post("/v1/digit", b"garbage")
    assert status == 422 and " — " in body["error"]
    server.wait_for_log(r'"POST /v1/digit HTTP/1.1" 422')
    assert not any("Traceback" in line for line in server.log)


def test_it_listens_on_loopback_only_by_default(server):
    assert server.url.startswith("http://127.0.0.1:")


def test_sigterm_answers_the_request_in_flight_then_stops():
    s = start_server()
    s.wait_for_log("Application startup complete")
    port = int(s.url.rsplit(":", 1)[1].strip("/"))
    body = digit_png()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        head = f"POST /v1/digit HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode() + body[:20])  # the request has begun, its body is not all there yet
        time.sleep(0.5)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        conn.sendall(body[20:])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b'"digit"' in answer
    assert s.proc.wait(timeout=30) == 0
    s.wait_for_log("Stopped: every request in flight was answered")
    assert not any("Traceback" in line or "Error" in line for line in s.log)


def _cpu_ticks(pid: int) -> int:
    """User + system CPU time process ``pid`` has used, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _worker_processes(pid: int) -> list[int]:
    """The server processes ``pid`` has spawned (not multiprocessing's resource tracker)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():  # each thread's: a replacement worker is its watcher thread's
        with contextlib.suppress(FileNotFoundError):  # a thread that has just ended
            children += [int(child) for child in (task / "children").read_text().split()]
    return [child for child in children if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="--workers needs Linux's SO_REUSEPORT")
def test_workers_share_the_port_and_all_stop_on_sigterm():
    s = start_server("--workers", "2", "--quiet")
    try:
        s.wait_for_startups(2)
        assert any("in 2 processes" in line for line in s.log)
        workers = _worker_processes(s.proc.pid)
        assert len(workers) == 1  # the first process serves too
        before = _cpu_ticks(workers[0])
        body = digit_png()
        for _ in range(200):  # each on a connection of its own, which the kernel gives to one process or the other
            status, answer = s.post("/v1/digit", body)
            assert status == 200 and answer["digit"] in range(10)
        assert _cpu_ticks(workers[0]) > before  # the worker answered some of them
    finally:
        code = stop(s)
    assert code == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert not any("Traceback" in line for line in s.log), s.log


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="--workers needs Linux's SO_REUSEPORT")
def test_a_worker_that_dies_is_reported_and_replaced():
    s = start_server("--workers", "2", "--quiet")
    try:
        s.wait_for_startups(2)
        (first,) = _worker_processes(s.proc.pid)
        time.sleep(RESTART_AFTER + 0.5)  # up long enough not to be taken for a worker that cannot start
        os.kill(first, signal.SIGKILL)  # as the kernel's out-of-memory killer would
        s.wait_for_log(rf"ERROR +a worker process \(pid {first}\) was killed \(SIGKILL\); starting another")
        s.wait_for_startups(3)
        (second,) = _worker_processes(s.proc.pid)
        before = _cpu_ticks(second)
        for _ in range(50):  # the port is shared with the new worker: it answers some
            status, answer = s.post("/v1/digit", digit_png())
            assert status == 200 and answer["digit"] in range(10)
        assert _cpu_ticks(second) > before
        time.sleep(RESTART_AFTER + 0.5)
        os.kill(second, signal.SIGKILL)
        s.wait_for_log(rf"ERROR +a worker process \(pid {second}\) was killed \(SIGKILL\); starting another")
        deadline = time.monotonic() + 30
        while not (third := _worker_processes(s.proc.pid)):
            assert time.monotonic() < deadline, s.log
            time.sleep(0.01)
        os.kill(third[0], signal.SIGKILL)  # at once, within RESTART_AFTER of its start: it would only stop again
        s.wait_for_log(rf"ERROR +a worker process \(pid {third[0]}\) was killed .* after it started; not started again")
        time.sleep(1)
        assert _worker_processes(s.proc.pid) == []
        assert s.post("/v1/digit", digit_png())[0] == 200  # the first process serves on
    finally:
        code = stop(s)
    assert code == 0
    assert not any("Traceback" in line for line in s.log), s.log


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="--workers needs Linux's SO_REUSEPORT")
def test_a_worker_asked_to_stop_is_not_started_again_and_ctrl_c_stops_all():
    s = start_server("--workers", "2", "--quiet", session=True)
    s.wait_for_startups(2)
    time.sleep(RESTART_AFTER + 0.5)  # a worker that died now would be replaced
    (worker,) = _worker_processes(s.proc.pid)
    os.kill(worker, signal.SIGTERM)  # as `systemctl stop` signals every process, the workers maybe first
    s.wait_for_log(rf"INFO +a worker process \(pid {worker}\) was killed \(SIGTERM\); not started again")
    time.sleep(1)
    assert _worker_processes(s.proc.pid) == []
    os.killpg(s.proc.pid, signal.SIGINT)  # Ctrl-C at a terminal: the whole group at once
    assert s.proc.wait(timeout=60) == 0
    assert not any("ERROR" in line or "Traceback" in line or "another" in line for line in s.log), s.log


def test_a_busy_port_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [MNISTCTL_SCRIPT, "serve", "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == f"Error: port {port} on 127.0.0.1 is in use — pass another --port, or stop what uses it"
    )


def test_without_the_serve_extra_it_says_what_to_install():
    # The packages cannot be uninstalled for one test: an import system that finds none of them stands in.
    code = "import sys; sys.modules.update(fastapi=None, uvicorn=None); from mnistctl.cli import app; app()"
    proc = subprocess.run([sys.executable, "-c", code, "serve"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "Error: mnistctl serve needs fastapi, uvicorn — install them: pip install 'mnistctl[serve]'"
    )


# --------------------------------------------------------------------------------------------- the page


def _browser():  # noqa: ANN202 - a selenium WebDriver
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no chromium and chromedriver here (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    driver = _browser()
    yield driver
    driver.quit()


def draw(browser, strokes: list[list[tuple[int, int]]]) -> None:
    """Each stroke as a pointer pressed at its first point, moved through the others, and released; points
    are offsets from the canvas's centre, in CSS pixels."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    pad = browser.find_element(By.ID, "pad")
    for stroke in strokes:
        actions = ActionChains(browser, duration=20).move_to_element_with_offset(pad, *stroke[0]).click_and_hold()
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:], strict=False):
            actions = actions.move_by_offset(x1 - x0, y1 - y0)
        actions.release().perform()


def shown(browser, element_id: str, expected: str, timeout: float = 20) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def text(_):  # noqa: ANN001, ANN202
        return browser.find_element(By.ID, element_id).text == expected

    try:
        WebDriverWait(browser, timeout).until(text)
        return expected
    except Exception:  # noqa: BLE001 - say what the page showed instead
        page = {i: browser.find_element(By.ID, i).text for i in ("answer", "confidence", "status")}
        raise AssertionError(f"#{element_id} never showed {expected!r}; the page shows {page}") from None


def test_a_digit_drawn_on_the_page_is_read(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url)
    assert browser.title == "mnistctl — draw a digit"
    draw(browser, [[(0, -90), (0, -30), (0, 30), (0, 90)]])  # a "1", top to bottom
    shown(browser, "answer", "1")
    assert "% sure" in browser.find_element(By.ID, "confidence").text
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars li")
    assert len(bars) == 10 and "top" in bars[1].get_attribute("class")
    assert bars[1].get_attribute("aria-label").startswith("1: ")
    seen = browser.find_elements(By.CSS_SELECTOR, "#seen canvas")
    assert len(seen) == 1 and seen[0].get_attribute("width") == "28"
    server.wait_for_log(r'"POST /v1/digit\?pixels=true HTTP/1.1" 200')

    browser.find_element(By.ID, "clear").click()
    shown(browser, "answer", "")
    assert browser.switch_to.active_element == browser.find_element(By.ID, "pad")  # focus returns to the pad


def test_number_mode_reads_everything_drawn(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url)
    browser.find_element(By.CSS_SELECTOR, 'input[value="number"]').click()
    one = [(0, -90), (0, -30), (0, 30), (0, 90)]
    seven = [(-50, -80), (0, -80), (50, -80), (25, -20), (0, 40), (-10, 90)]
    draw(browser, [[(x - 150, y) for x, y in one], [(x + 100, y) for x, y in seven]])
    shown(browser, "answer", "17")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#seen canvas")) == 2
