"""Latent diffusion through the installed commands: dit-train-vae, dit-extract, dit-train on latents, dit-sample decoding."""
import gzip, json, shutil, struct, subprocess

import numpy as np
import pytest

pytest.importorskip('diffusers')
from conftest import child_env


def _command(name):
    path = shutil.which(name)
    assert path, f"console script {name} is not installed: pip install -e ."
    return path


def _run(name, *flags, timeout=300):
    return subprocess.run([_command(name), *map(str, flags)], env=child_env(), capture_output=True, text=True, timeout=timeout)


def _write_idx(path, arr):
    with gzip.open(path, 'wb') as f: f.write(b'\x00\x00\x08' + bytes([arr.ndim]) + struct.pack(f'>{arr.ndim}I', *arr.shape) + arr.tobytes())


@pytest.fixture(scope='module')
def fake_fmnist(tmp_path_factory):
    "A Fashion-MNIST folder of 20 random items (both splits), labels 0..9 twice."
    root = tmp_path_factory.mktemp('fmnist')
    imgs = np.random.RandomState(0).randint(0, 256, (20, 28, 28), dtype=np.uint8)
    for split in ('train', 't10k'):
        _write_idx(root / f'{split}-images-idx3-ubyte.gz', imgs)
        _write_idx(root / f'{split}-labels-idx1-ubyte.gz', np.arange(20, dtype=np.uint8) % 10)
    return root


@pytest.fixture(scope='module')
def tiny_vae(fake_fmnist, tmp_path_factory):
    out = tmp_path_factory.mktemp('vae') / 'vae'
    r = _run('dit-train-vae', '--out', out, '--data-path', fake_fmnist, '--steps', '3', '--batch-size', '4', '--channels', 8, 8, 8,
             '--scale-images', 20, '--test-images', 20, '--no-progress')
    assert r.returncode == 0, r.stderr
    return out


def test_train_vae_writes_a_loadable_folder(tiny_vae):
    from dit_edu.data import load_vae
    vae = load_vae(str(tiny_vae))
    log = json.loads((tiny_vae / 'train_log.json').read_text())
    assert vae.config.latent_channels == 4 and vae.config.block_out_channels == [8, 8, 8]
    assert vae.config.scaling_factor == log['scaling_factor'] != 0.18215 and np.isfinite(log['test']['l1'])


@pytest.mark.parametrize('flags, says', [(['--channels', '12'], 'multiple of 8'), (['--image-size', '30'], 'multiple of 4'),
                                         (['--steps', '0'], '--steps'), (['--data-path', '/nonexistent'], '--data-path')])
def test_train_vae_user_errors(tmp_path, flags, says):
    r = _run('dit-train-vae', '--out', tmp_path / 'v', *flags)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('dit-train-vae: error:') and says in lines[0], r.stderr
    assert not (tmp_path / 'v').exists()


def test_extract_train_and_sample_on_the_latents(fake_fmnist, tiny_vae, tmp_path):
    lat = tmp_path / 'lat'
    r = _run('dit-extract', '--data-path', fake_fmnist, '--out', lat, '--vae', tiny_vae, '--batch-size', 8, '--num-workers', 0,
             '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    meta = json.loads((lat / 'meta.json').read_text())
    assert meta['shape'] == [4, 8, 8] and meta['n'] == 20 and meta['vae'] == str(tiny_vae.resolve())
    r = _run('dit-train', '--data-path', lat, '--results-dir', tmp_path / 'res', '--model', 'DiT-Nano/4', '--num-classes', 10,
             '--global-batch-size', 8, '--max-steps', 2, '--log-every', 1, '--ckpt-every', 2, '--sample-every', 2,
             '--warmup-steps', 0, '--num-workers', 0, '--no-progress', '--device', 'cpu', '--precision', 'fp32')
    assert r.returncode == 0, r.stderr
    run = next((tmp_path / 'res').iterdir())
    assert (run / 'samples' / '0000002.png').is_file()          # the grid is decoded: 1-channel 32 px images
    from PIL import Image
    assert Image.open(run / 'samples' / '0000002.png').size == (10 * 34 + 2, 8 * 34 + 2)
    out = tmp_path / 's.npz'
    r = _run('dit-sample', '--ckpt', run / 'ema.safetensors', '--num-sampling-steps', 2, '--class-labels', 0, 1, '--out', out)
    assert r.returncode == 0, r.stderr
    assert np.load(out)['arr_0'].shape == (2, 32, 32, 1)        # decoded through the run's VAE, not 4-channel latents
    r = _run('dit-sample', '--ckpt', run / 'ema.safetensors', '--vae', tmp_path / 'novae', '--out', out)
    assert r.returncode == 2 and r.stderr.strip().startswith('dit-sample: error: --vae'), r.stderr
