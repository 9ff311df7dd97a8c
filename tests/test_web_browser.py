"""The page in a real browser (Debian's chromium + chromedriver through selenium): load an
image, paint, undo, redo, inpaint (one job for a double click), compare, download.

Skips, saying why, when selenium, chromium or chromedriver is not installed
(``apt-get install chromium chromium-driver``; ``.ci/run`` does it)."""

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from asuka.web import InpaintApp, make_server  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="chromium and chromedriver not found (apt-get install chromium chromium-driver)")


@pytest.fixture()
def server():
    from asuka.testing import tiny_pipeline

    app = InpaintApp(tiny_pipeline(0), model_name="tiny", default_steps=3, max_steps=10)
    server = make_server(app, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    assert server.started.wait(20)
    yield server
    server.shutdown()
    thread.join(timeout=20)
    server.server_close()


@pytest.fixture()
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


def _strokes(driver) -> int:
    return int(driver.find_element(By.ID, "mask-canvas").get_attribute("data-strokes"))


def _drag(driver, element, start, end):
    ActionChains(driver).move_to_element_with_offset(element, *start).click_and_hold() \
        .move_to_element_with_offset(element, *end).release().perform()


def test_load_paint_undo_redo_inpaint_compare_download(server, browser, tmp_path):
    photo = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    photo_path = tmp_path / "photo.png"
    PIL.Image.fromarray(photo).save(photo_path)
    wait = WebDriverWait(browser, 30)

    browser.get(server.url)
    wait.until(lambda d: d.find_element(By.ID, "model-info").text.startswith("model tiny"))
    browser.find_element(By.ID, "image-file").send_keys(str(photo_path))
    wait.until(lambda d: d.find_element(By.ID, "stage").is_displayed())
    canvas = browser.find_element(By.ID, "mask-canvas")
    assert "128×96" in browser.find_element(By.ID, "input-caption").text

    _drag(browser, canvas, (-20, -10), (10, -10))  # offsets from the canvas' centre
    _drag(browser, canvas, (-20, 10), (10, 10))
    assert _strokes(browser) == 2
    browser.find_element(By.ID, "undo").click()
    assert _strokes(browser) == 1 and browser.find_element(By.ID, "redo").is_enabled()
    browser.find_element(By.ID, "redo").click()
    assert _strokes(browser) == 2 and not browser.find_element(By.ID, "redo").is_enabled()

    # Zoom with the keyboard, and back to fit: the strokes stay.
    browser.find_element(By.TAG_NAME, "body").send_keys("+")
    assert browser.find_element(By.ID, "zoom-value").text == "125%"
    browser.find_element(By.TAG_NAME, "body").send_keys("0")
    assert browser.find_element(By.ID, "zoom-value").text == "100%"

    browser.execute_script("const b = document.getElementById('run'); b.click(); b.click();")  # a double click
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Done"))
    assert len(server.app._jobs) == 1  # one job for the two clicks
    result = browser.find_element(By.ID, "result")
    assert result.is_displayed()
    result_url = result.get_attribute("src")
    assert result_url.startswith("blob:")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#history .thumb")) == 1

    compare = browser.find_element(By.ID, "compare")
    ActionChains(browser).click_and_hold(compare).perform()
    assert result.get_attribute("src") != result_url  # the original while held
    ActionChains(browser).release(compare).perform()
    assert result.get_attribute("src") == result_url

    browser.find_element(By.ID, "download").click()
    deadline = time.monotonic() + 20
    files = []
    while time.monotonic() < deadline:
        files = [p for p in Path(browser.downloads).iterdir() if p.suffix == ".png"]
        if files:
            break
        time.sleep(0.1)
    assert files and files[0].name.startswith("photo_inpainted_seed")
    out = np.asarray(PIL.Image.open(files[0]).convert("RGB"))
    assert out.shape == photo.shape
    # The corners were not painted: kept exactly; the painted middle was filled.
    assert np.array_equal(out[:8, :8], photo[:8, :8]) and np.array_equal(out[-8:, -8:], photo[-8:, -8:])
    assert not np.array_equal(out[40:56, 50:70], photo[40:56, 50:70])


def test_a_photo_above_the_view_limit_is_painted_downscaled_and_wheel_zooms(server, browser, tmp_path):
    """6 MP (the page paints on at most 4 MP): the mask is sent at the view's size and the
    server scales it up; the result has the photo's full size."""
    h, w = 2000, 3000
    photo = np.zeros((h, w, 3), np.uint8)
    photo[..., 0] = np.linspace(0, 255, w, dtype=np.float32).astype(np.uint8)[None, :]
    photo_path = tmp_path / "big.png"
    PIL.Image.fromarray(photo).save(photo_path)
    wait = WebDriverWait(browser, 60)

    browser.get(server.url)
    wait.until(lambda d: d.find_element(By.ID, "model-info").text.startswith("model tiny"))
    browser.find_element(By.ID, "image-file").send_keys(str(photo_path))
    wait.until(lambda d: d.find_element(By.ID, "stage").is_displayed())
    canvas = browser.find_element(By.ID, "mask-canvas")
    assert "3000×2000 (painting on a 2449×1633 view)" in browser.find_element(By.ID, "input-caption").text
    assert (int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))) == (2449, 1633)

    browser.execute_script("""
        const box = document.getElementById('viewport').getBoundingClientRect();
        document.getElementById('viewport').dispatchEvent(new WheelEvent('wheel', {
            deltaY: -200, clientX: box.left + box.width / 2, clientY: box.top + box.height / 2,
            bubbles: true, cancelable: true}));""")
    assert int(browser.find_element(By.ID, "zoom-value").text.rstrip("%")) > 100
    browser.find_element(By.ID, "zoom-fit").click()

    _drag(browser, canvas, (-10, 0), (10, 0))
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Done"))
    size = browser.execute_script("const r = document.getElementById('result'); "
                                  "return [r.naturalWidth, r.naturalHeight];")
    assert size == [w, h]
