"""The explorers of nbs/24_widgets.ipynb in a real browser: JupyterLab 4 + Chromium driven by Playwright.

Starts JupyterLab on 127.0.0.1 (free port, temporary config/data/runtime dirs), opens a copy of the
notebook (outputs cleared), runs all cells, moves a slider of each explorer (denoising step, noising t,
attention query, the clip player's frame and t step) and checks that the rendered image changes, presses
Generate with a new seed and waits for the sampler to finish (denoising explorer and clip player), presses
the clip player's play button and checks that the clip plays, and checks that no cell raised and no widget
failed to display.
Screenshots go to artifacts/widgets_browser/ (gitignored). Skips only when chromium is not installed.
"""
import json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = Path(os.environ.get('DIT_WIDGETS_NB', ROOT / 'nbs' / '24_widgets.ipynb'))
ARTIFACTS = Path(os.environ.get('DIT_ARTIFACTS', ROOT / 'artifacts')) / 'widgets_browser'
CHROMIUM = os.environ.get('CHROMIUM') or shutil.which('chromium') or shutil.which('chromium-browser')
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage']
# (slider css class, image css class) pairs the test moves; the classes are set by dit_edu.widgets
SLIDERS = [s.split(':') for s in os.environ.get('DIT_WIDGETS_SLIDERS',
           'dit-denoise-step:dit-denoise-xt,dit-noising-t:dit-noising-xt,dit-attn-col:dit-attn-map,'
           'dit-clip-frame:dit-clip-xt,dit-clip-t:dit-clip-x0').split(',')]
CLIP_PLAYER = os.environ.get('DIT_WIDGETS_CLIP_PLAYER', '1') == '1'   # the video DiT's clip player (appended to 24_widgets)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def wait_for(cond, timeout, what, interval=0.5):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            v = cond()
            if v: return v
        except Exception:
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server in a temporary directory holding an output-free copy of the notebook."
    tmp = tmp_path_factory.mktemp('lab')
    nb = json.loads(NOTEBOOK.read_text())
    for c in nb['cells']:
        if c['cell_type'] == 'code': c['outputs'], c['execution_count'] = [], None
    nb['metadata'].pop('widgets', None)
    (tmp / 'work').mkdir()
    # no "get Jupyter news?" toast over the screenshots
    news = tmp / 'settings' / '@jupyterlab' / 'apputils-extension'
    news.mkdir(parents=True)
    (news / 'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false'}))
    (tmp / 'work' / NOTEBOOK.name).write_text(json.dumps(nb))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / 'cfg'), JUPYTER_DATA_DIR=str(tmp / 'data'),
               JUPYTER_RUNTIME_DIR=str(tmp / 'run'), JUPYTERLAB_WORKSPACES_DIR=str(tmp / 'ws'),
               JUPYTERLAB_SETTINGS_DIR=str(tmp / 'settings'),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep),
               MPLBACKEND='module://matplotlib_inline.backend_inline')
    port = free_port()
    log = open(tmp / 'jupyter.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyter', 'lab', '--allow-root', '--no-browser', '--ip', '127.0.0.1',
                             '--port', str(port), '--ServerApp.token=', '--ServerApp.password=',
                             f'--ServerApp.root_dir={tmp / "work"}', '--LabApp.news_url=None'],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp / 'work', start_new_session=True)
    base = f'http://127.0.0.1:{port}'
    try:
        wait_for(lambda: proc.poll() is None and get_json(f'{base}/api/status'), 120, 'JupyterLab to answer /api/status')
        yield base, tmp
    finally:
        os.killpg(proc.pid, 15)
        try: proc.wait(20)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, 9)
        log.close()
        shutil.copy(tmp / 'jupyter.log', ARTIFACTS / 'jupyter.log') if ARTIFACTS.exists() else None


def kernel_idle(base):
    s = get_json(f'{base}/api/sessions')
    return s and all(x['kernel']['execution_state'] == 'idle' for x in s)


def run_all(page, base):
    "Run All Cells through the menu; retried because a cold kernel start can swallow the first request."
    first = page.locator('.jp-Notebook .jp-CodeCell .jp-InputPrompt').first
    for attempt in range(3):
        page.locator('.lm-MenuBar-itemLabel', has_text='Run').first.click()
        page.locator('.lm-Menu-itemLabel', has_text='Run All Cells').first.click()
        try:
            wait_for(lambda: first.text_content().strip() not in ('[ ]:', '[]:', ''), 30,
                     'the first cell to start')
            return
        except AssertionError:
            page.keyboard.press('Escape')
    raise AssertionError('Run All Cells did not start the notebook')


def slider_value(slider):
    return slider.locator('.widget-readout').inner_text().strip()


def test_widgets_browser(lab):
    from playwright.sync_api import sync_playwright
    base, tmp = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={'width': 1400, 'height': 1000})
        try:
            page.goto(f'{base}/lab/tree/{NOTEBOOK.name}?reset', timeout=120_000)
            page.locator('.jp-Notebook .jp-CodeCell').first.wait_for(timeout=120_000)
            wait_for(lambda: kernel_idle(base), 120, 'the kernel to be idle')
            run_all(page, base)
            prompts = page.locator('.jp-Notebook .jp-CodeCell .jp-InputPrompt')
            n = prompts.count()

            def all_done():
                if page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]',
                                has_text='Traceback').count(): return 'error'
                txt = [prompts.nth(i).text_content().strip() for i in range(n)]  # text_content: cells off screen too
                return all(t[1:-2].strip().isdigit() for t in txt) and kernel_idle(base)
            wait_for(all_done, 240, 'all cells to finish', interval=1.0)
            t_run = time.time() - t_start
            page.wait_for_timeout(1000)  # let the last widget views render
            page.screenshot(path=str(ARTIFACTS / '00_after_run_all.png'))
            text = page.locator('.jp-Notebook').text_content()
            assert 'Traceback' not in text, 'a cell raised:\n' + text[text.index('Traceback') - 500:][:3000]
            assert 'Error displaying widget' not in text
            assert page.locator('.jp-OutputArea-output .widget-image').count() > 0, 'no image widget was rendered'

            timings = {}
            for k, (slider_cls, img_cls) in enumerate(SLIDERS):
                slider = page.locator(f'.{slider_cls}').last
                img = page.locator(f'.{img_cls}').last
                assert slider.count() == 1 and img.count() == 1, f'no .{slider_cls} / .{img_cls} on the page'
                explorer = slider.locator('xpath=ancestor::div[contains(@class, "dit-explorer")][1]')
                slider.scroll_into_view_if_needed()
                page.wait_for_timeout(300)
                shot = ARTIFACTS / f'{k + 1:02d}_{slider_cls}_before.png'
                (explorer if explorer.count() else img).screenshot(path=str(shot))
                handle = slider.locator('.noUi-handle')
                handle.focus()
                src0, png0, v0 = img.get_attribute('src'), img.screenshot(), slider_value(slider)
                at_max = handle.get_attribute('aria-valuenow') == handle.get_attribute('aria-valuemax')
                # time from the key press to the new picture, measured inside the page
                img.evaluate("el => { el._changedAt = null; new MutationObserver((m, o) => { el._changedAt = performance.now();"
                             " o.disconnect(); }).observe(el, {attributes: true, attributeFilter: ['src']}); }")
                t0 = page.evaluate('performance.now()')
                for _ in range(3): page.keyboard.press('ArrowLeft' if at_max else 'ArrowRight')
                t1 = wait_for(lambda: img.evaluate('el => el._changedAt'), 10, f'the image under .{img_cls} to change', 0.02)
                timings[slider_cls] = t1 - t0
                page.wait_for_timeout(300)
                v1 = slider_value(slider)
                assert v1 != v0, f'{slider_cls} did not move ({v0})'
                assert img.screenshot() != png0, f'the rendered image did not change when {slider_cls} moved {v0} -> {v1}'
                (explorer if explorer.count() else img).screenshot(path=str(ARTIFACTS / f'{k + 1:02d}_{slider_cls}_after.png'))
            # the Generate button: a new seed, one sampler run in the kernel, the progress bar full, new pictures
            gen, timings['generate_s'] = press_generate(page, 'dit-denoise', 120)
            bar = page.locator('.dit-denoise-progress .progress-bar').last
            assert bar.get_attribute('style') and 'width: 100%' in bar.get_attribute('style'), bar.get_attribute('style')
            step = page.locator('.dit-denoise-step').last
            step.locator('.noUi-handle').focus()
            for _ in range(int(float(step.locator('.noUi-handle').get_attribute('aria-valuemax') or 30))): page.keyboard.press('ArrowRight')
            wait_for(lambda: 'final' in page.locator('.dit-denoise-info').last.text_content(), 30, 'the last step (the samples)')
            explorer = gen.locator('xpath=ancestor::div[contains(@class, "dit-explorer")][1]')
            explorer.screenshot(path=str(ARTIFACTS / f'{len(SLIDERS) + 1:02d}_generate_after.png'))
            if CLIP_PLAYER: timings['clip_generate_s'] = check_clip_player(page)
            text = page.locator('.jp-Notebook').text_content()
            assert 'Error displaying widget' not in text
            page.screenshot(path=str(ARTIFACTS / '99_final.png'))
            (ARTIFACTS / 'timings.json').write_text(json.dumps(
                {'run_all_s': round(t_run, 1), 'total_s': round(time.time() - t_start, 1),
                 'generate_s': round(timings.pop('generate_s'), 1),
                 'clip_generate_s': round(timings.pop('clip_generate_s', float('nan')), 1),
                 'slider_to_new_image_ms': {k: round(v) for k, v in timings.items()}}, indent=1))
        finally:
            page.screenshot(path=str(ARTIFACTS / 'last_state.png'))
            browser.close()


def press_generate(page, prefix, timeout):
    "Give the `prefix` widget a new seed and press its Generate; wait for a new picture. Returns (button, seconds)."
    gen = page.locator(f'.{prefix}-generate').last
    gen.scroll_into_view_if_needed()
    img = page.locator(f'.{prefix}-x0').last
    src0 = img.get_attribute('src')
    seed = page.locator(f'.{prefix}-seed input').last
    seed.fill(str(int(seed.input_value()) + 1)); seed.press('Enter')
    t0 = time.time()
    gen.click()
    wait_for(lambda: img.get_attribute('src') != src0 and not gen.is_disabled(), timeout, f'{prefix} Generate to finish', 0.2)
    return gen, time.time() - t0


def check_clip_player(page):
    "Generate a clip with a new seed (new pictures, full progress bar), then press play and see the frame change; returns seconds."
    gen, seconds = press_generate(page, 'dit-clip', 180)
    img = page.locator('.dit-clip-x0').last
    bar = page.locator('.dit-clip-progress .progress-bar').last
    assert 'width: 100%' in (bar.get_attribute('style') or ''), bar.get_attribute('style')
    assert 'final' in page.locator('.dit-clip-info').last.text_content()
    frame = page.locator('.dit-clip-frame').last
    seen = {slider_value(frame)}
    src_seen = {img.get_attribute('src')}
    page.locator('.dit-clip-play button').first.click()                   # the Play widget's play button
    wait_for(lambda: (seen.add(slider_value(frame)), src_seen.add(img.get_attribute('src')))
             and len(seen) >= 3 and len(src_seen) >= 3, 20, 'the clip to play (frames 1, 2, 3, ...)', 0.05)
    explorer = gen.locator('xpath=ancestor::div[contains(@class, "dit-explorer")][1]')
    explorer.screenshot(path=str(ARTIFACTS / 'clip_player_playing.png'))
    return seconds
