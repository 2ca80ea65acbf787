"""Latent diffusion end to end with a tiny random AutoencoderKL: dit-extract, then dit-train on the latents and on images."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip('diffusers')
from PIL import Image

from dit_edu.data import extract, tiny_vae_config, LatentDataset
from dit_edu.train import train
from dit_edu.runs import read_checkpoint
from dit_edu.sample import load_model


@pytest.fixture(scope='module')
def folder_and_vae(tmp_path_factory):
    root = tmp_path_factory.mktemp('lat')
    rng = np.random.RandomState(0)
    for c in ('a', 'b', 'c'):
        (root / 'imgs' / c).mkdir(parents=True)
        for i in range(6): Image.fromarray(rng.randint(0, 255, (70, 90, 3), dtype=np.uint8)).save(root / 'imgs' / c / f'{i}.png')
    torch.manual_seed(0)
    diffusers.AutoencoderKL(**tiny_vae_config()).save_pretrained(root / 'vae')
    return root


def test_extract_then_train_on_latents(folder_and_vae, tmp_path):
    root = folder_and_vae
    meta = extract(['--data-path', str(root / 'imgs'), '--out', str(tmp_path / 'lat'), '--image-size', '64',
                         '--vae', str(root / 'vae'), '--batch-size', '6', '--num-workers', '0', '--device', 'cpu'])
    assert meta['n'] == 18 and meta['shape'] == [4, 8, 8] and meta['num_classes'] == 3
    ds = LatentDataset(tmp_path / 'lat')
    assert ds[0][0].shape == (2, 4, 8, 8) and torch.isfinite(ds[0][0]).all()
    t = train(['--data-path', str(tmp_path / 'lat'), '--results-dir', str(tmp_path / 'res'), '--model', 'DiT-Nano/2',
              '--num-classes', '3', '--num-workers', '0', '--global-batch-size', '6', '--max-steps', '4', '--log-every', '2', '--ckpt-every', '4',
              '--sample-every', '0', '--no-progress', '--device', 'cpu', '--precision', 'fp32'])
    assert t.args.dataset == 'latents' and t.model_raw.in_channels == 4 and t.model_raw.input_size == 8
    ck = read_checkpoint(t.exp_dir / 'checkpoints' / '0000004.pt')
    assert ck['step'] == 4 and ck['config']['in_channels'] == 4
    m = load_model(t.exp_dir / 'ema.safetensors')
    assert m.num_classes == 3 and m.input_size == 8


def test_train_on_images_with_vae_on_the_fly(folder_and_vae, tmp_path):
    root = folder_and_vae
    t = train(['--data-path', str(root / 'imgs'), '--vae', str(root / 'vae'), '--image-size', '64', '--results-dir', str(tmp_path),
              '--model', 'DiT-Nano/4', '--num-classes', '3', '--global-batch-size', '4', '--max-steps', '2', '--log-every', '1',
              '--ckpt-every', '2', '--sample-every', '2', '--no-progress', '--device', 'cpu', '--num-workers', '0'])
    assert t.args.dataset == 'imagefolder' and t.model_raw.input_size == 8
    rows = [json.loads(l) for l in (t.exp_dir / 'metrics.jsonl').read_text().splitlines()]
    assert len(rows) == 2 and all(np.isfinite(r['loss']) for r in rows)
    assert (t.exp_dir / 'samples' / '0000002.png').is_file()
