"""dit-sweep as a user meets it: a two-config sweep through the installed command, resume without retraining,
measurements that come back equal, and one line with exit 2 (nothing written) for a bad spec, flag or folder."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest

from dit_edu.sweep import main, sweep, read_rows
from dit_edu.sample import load_model
from conftest import child_env

TWO = ['--configs', '32x2/7', '64x2/4', '--seeds', '0', '--samples-per-class', '1', '--no-progress']


def _rows(out):
    return json.loads((Path(out)/'results.json').read_text())


def _key(r):
    return (r['config'], r['seed'], r['step'], r['kind'], r['weights'], r.get('sampler'), r.get('cfg_scale'))


@pytest.fixture(scope='module')
def swept(tmp_path_factory):
    "A two-config sweep to steps 3 and 6, run through the installed command (its exit status is checked)."
    out = tmp_path_factory.mktemp('sweep')/'sw'
    exe = shutil.which('dit-sweep')
    assert exe, "console script dit-sweep is not installed: pip install -e ."
    r = subprocess.run([exe, *TWO, '--steps', '3', '6', '--out', str(out)], capture_output=True, text=True,
                       env=child_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_two_config_sweep(swept):
    rows = _rows(swept)
    held = [r for r in rows if r['kind'] == 'heldout']
    # both configs, both fixed steps, raw and EMA weights, on the test split at 8 timesteps
    assert {(r['config'], r['step'], r['weights']) for r in held} >= {
        (c, s, w) for c in ('32x2/7', '64x2/4') for s in (3, 6) for w in ('raw', 'ema')}
    assert all(r['source'].startswith('test split') and len(r['mse_per_t']) == 8 for r in held)
    assert all(0 < r['mse'] < 2 and r['train_flops'] == 3 * r['gflops'] * 1e9 * 64 * r['step'] for r in held)
    # quality at the last point only (the default), with the sampler settings recorded
    q = [r for r in rows if r['kind'] == 'quality']
    assert {(r['config'], r['step']) for r in q} == {('32x2/7', 6), ('64x2/4', 6)}
    assert all(r['n'] == 10 and 0 <= r['accuracy'] <= 1 and r['sampling_gflops'] == 40 * r['gflops'] for r in q)
    # the CSV holds the same rows; the EMA weights load as dit-sample loads them
    assert len((swept/'results.csv').read_text().splitlines()) == len(rows) + 1
    m = load_model(next((swept/'runs'/'64x2-4-seed0').glob('*/ema.safetensors')))
    assert (m.blocks[0].attn.qkv.in_features, len(m.blocks), m.patch_size) == (64, 2, 4)
    assert not (swept/'.lock').exists()


def test_resume_measures_without_retraining(swept, tmp_path):
    "Rows lost in a crash are measured again from the checkpoint, equal; a longer spec continues the run."
    out = tmp_path/'sw'
    shutil.copytree(swept, out)
    f = out/'runs'/'64x2-4-seed0'/'evals.jsonl'
    before = read_rows(f)
    kept = [r for r in before if not (r['step'] == 6 and r['kind'] == 'heldout' and r['weights'] == 'ema')]
    f.write_text(''.join(json.dumps(r) + '\n' for r in kept) + '{"cut off')
    metrics = (next((out/'runs'/'64x2-4-seed0').glob('*/metrics.jsonl'))).read_text()
    sweep([*TWO, '--steps', '3', '6', '--out', str(out)])
    after = {_key(r): r for r in read_rows(f)}
    assert {_key(r): r.get('mse', r.get('accuracy')) for r in before} == {k: r.get('mse', r.get('accuracy'))
                                                                           for k, r in after.items()}
    assert next((out/'runs'/'64x2-4-seed0').glob('*/metrics.jsonl')).read_text() == metrics   # nothing trained
    # a third point continues from the checkpoint at 6 and equals a run that never stopped
    sweep([*TWO, '--steps', '3', '6', '9', '--out', str(out), '--samples-per-class', '0'])
    fresh = tmp_path/'fresh'
    sweep(['--configs', '64x2/4', '--seeds', '0', '--steps', '9', '--samples-per-class', '0', '--no-progress',
           '--out', str(fresh)])
    cont = [r for r in _rows(out) if r['config'] == '64x2/4' and r['step'] == 9 and r['kind'] == 'heldout']
    once = [r for r in _rows(fresh) if r['step'] == 9 and r['kind'] == 'heldout']
    assert sorted((r['weights'], r['loss']) for r in cont) == sorted((r['weights'], r['loss']) for r in once)


def _refused(argv, capsys, says):
    with pytest.raises(SystemExit) as e: main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith('dit-sweep: error: ') and says in err[0], err
    return err[0]


@pytest.mark.parametrize('spec, says', [
    ({'configs': ['DiT-Nano/4'], 'budget': [1e9]}, 'unknown spec keys'),
    ({'configs': [], 'steps': [3]}, 'at least one'),
    ({'configs': ['64x2/4'], 'budgets': [-1]}, 'budgets'),
    ({'configs': ['64x2/4'], 'steps': [3], 'seeds': [-1]}, 'seeds'),
    ({'configs': [{'hidden_size': 65536, 'depth': 2, 'patch_size': 4, 'num_heads': 4}], 'steps': [3]}, '4096'),
    ({'configs': ['64x2/4', '64x2/5'], 'steps': [3]}, 'not divisible'),
    ({'configs': ['64x2/5'], 'steps': [3]}, 'multiple of 5'),
    ({'configs': ['64x2/4'], 'steps': [3], 'eval': {'samplers': ['euler']}}, 'samplers'),
    ({'configs': ['64x2/4'], 'steps': [3], 'train': {'lr': -1}}, '--lr'),
    ({'configs': ['64x2/4'], 'steps': [3], 'train': {'model': 'DiT-S/2'}}, 'not dit-train flags'),
    ({'configs': ['DiT-Huge/2'], 'steps': [3]}, 'unknown model'),
    ([1, 2], 'table'),
])
def test_bad_spec_one_line_nothing_written(spec, says, tmp_path, capsys):
    f = tmp_path/'spec.json'
    f.write_text(json.dumps(spec))
    _refused([str(f), '--out', str(tmp_path/'out')], capsys, says)
    assert not (tmp_path/'out').exists()


def test_bad_files_and_folders(tmp_path, capsys):
    (tmp_path/'bad.json').write_text('{"configs": [')
    _refused([str(tmp_path/'bad.json')], capsys, 'not valid JSON')
    _refused([str(tmp_path/'missing.toml')], capsys, 'no spec file')
    _refused(['--configs', '64x2/4', '--budgets', 'nan'], capsys, '--budgets')
    _refused(['--configs', '64x2/4'], capsys, 'give budgets')
    (tmp_path/'file').write_text('x')
    _refused(['--configs', '64x2/4', '--steps', '2', '--out', str(tmp_path/'file')], capsys, 'is a file')
    (tmp_path/'theirs').mkdir()
    (tmp_path/'theirs'/'notes.txt').write_text('mine')
    _refused(['--configs', '64x2/4', '--steps', '2', '--out', str(tmp_path/'theirs')], capsys, 'not a dit-sweep folder')
    assert os.listdir(tmp_path/'theirs') == ['notes.txt']


def test_lock_and_changed_settings(swept, tmp_path, capsys):
    out = tmp_path/'sw'
    shutil.copytree(swept, out)
    (out/'.lock').write_text(str(os.getpid()))                    # a live sweep holds it
    _refused([*TWO, '--steps', '3', '6', '--out', str(out)], capsys, 'another dit-sweep')
    (out/'.lock').unlink()
    f = tmp_path/'lr.json'
    f.write_text(json.dumps({'train': {'lr': 3e-3}}))
    _refused([str(f), *TWO, '--steps', '3', '6', '--out', str(out)], capsys, 'give a new --out')


def test_plan_writes_nothing(tmp_path, capsys):
    sweep(['--configs', 'DiT-Nano/4', '96x4/4', '--budgets', '1e12', '--plan', '--out', str(tmp_path/'p')])
    out = capsys.readouterr().out
    assert 'DiT-Nano/4' in out and '[125]' in out and not (tmp_path/'p').exists()
