"""dit-bench: the CPU smoke run that CI executes, and its JSON."""
import json, os, shutil, subprocess
from pathlib import Path
import pytest
from dit_edu.bench import bench, main, UserError

ROOT = Path(__file__).resolve().parents[1]


def test_dit_bench_cpu_smoke(tmp_path):
    "The installed command: exit 0, a table on stdout (not the report's dict), the report in --json."
    out = tmp_path / 'bench.json'
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1')
    r = subprocess.run([shutil.which('dit-bench'), '--model', 'DiT-S/8', '--batch-size', '4', '--steps', '2', '--device', 'cpu',
                        '--json', str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'images/s' in r.stdout and "'results'" not in r.stdout, r.stdout[-2000:]
    saved = json.loads(out.read_text())
    assert [(r['task'], r['mode']) for r in saved['results']] == \
        [('train', 'reference'), ('train', 'fast'), ('sample', 'reference'), ('sample', 'fast')]
    tr_ref, tr_fast = saved['results'][0], saved['results'][1]
    assert len(tr_ref['losses']) == len(tr_fast['losses']) == 4          # 2 warm-up + 2 timed steps
    for a, b in zip(tr_ref['losses'], tr_fast['losses']):               # same data, t, noise, weights: bf16 tracks fp32
        assert abs(a - b) / a < 2e-2
    for row in saved['results']:
        assert row['images_per_s'] > 0 and row['mfu'] is None             # a CPU: no meaningful peak, no MFU
    assert saved['results'][3]['bf16_vs_fp32_rel_l2'] < 5e-2
    assert saved['matmul_bf16_tflops'] is None and 'no MFU on a CPU' in r.stdout


def test_dit_bench_rejects_bad_mode():
    with pytest.raises(UserError, match='slow'):
        bench(['--modes', 'slow', '--device', 'cpu'])


def test_console_script_declared():
    import configparser, pathlib
    cfg = configparser.ConfigParser(); cfg.read(pathlib.Path(__file__).parents[1] / 'settings.ini')
    assert 'dit-bench=dit_edu.bench:main' in cfg['DEFAULT']['console_scripts']
