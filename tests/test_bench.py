"""dit-bench: the CPU smoke run that CI executes, and its JSON."""
import json, shutil
import pytest
from dit_edu.bench import main


@pytest.fixture
def one_thread():
    """One CPU thread: on a small shared machine two threads contend and run ten times slower."""
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_dit_bench_cpu_smoke(tmp_path, one_thread):
    out = tmp_path / 'bench.json'
    rep = main(['--model', 'DiT-S/8', '--batch-size', '4', '--steps', '2', '--device', 'cpu', '--json', str(out)])
    saved = json.loads(out.read_text())
    assert [(r['task'], r['mode']) for r in saved['results']] == \
        [('train', 'reference'), ('train', 'fast'), ('sample', 'reference'), ('sample', 'fast')]
    tr_ref, tr_fast = saved['results'][0], saved['results'][1]
    assert len(tr_ref['losses']) == len(tr_fast['losses']) == 4          # 2 warm-up + 2 timed steps
    for a, b in zip(tr_ref['losses'], tr_fast['losses']):               # same data, t, noise, weights: bf16 tracks fp32
        assert abs(a - b) / a < 2e-2
    for r in saved['results']:
        assert r['images_per_s'] > 0 and r['mfu'] > 0
    assert saved['results'][3]['bf16_vs_fp32_rel_l2'] < 5e-2
    assert rep['matmul_bf16_tflops'] > 0


def test_dit_bench_rejects_bad_mode():
    with pytest.raises(ValueError, match='slow'):
        main(['--modes', 'slow', '--device', 'cpu'])


def test_console_script_declared():
    import configparser, pathlib
    cfg = configparser.ConfigParser(); cfg.read(pathlib.Path(__file__).parents[1] / 'settings.ini')
    assert 'dit-bench=dit_edu.bench:main' in cfg['DEFAULT']['console_scripts']
