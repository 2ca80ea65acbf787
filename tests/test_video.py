"""The video DiT end to end: dit-train --dataset moving-fmnist (exact resume, DDP, GIF grids), dit-sample to .gif and .npz."""
import json, os, shutil, socket, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from dit_edu.train import train
from dit_edu.runs import read_checkpoint
from dit_edu.video import load_video
from dit_edu.video_train import SHIPPED_VIDEO
from conftest import ROOT, RUN, child_env as _env

VIDEO = ['--dataset', 'moving-fmnist', '--num-frames', '2', '--global-batch-size', '4', '--log-every', '3', '--no-progress',
         '--warmup-steps', '2']



def _same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope='module')
def run6(tmp_path_factory):
    """A 6-step video run from the shipped image DiT, checkpoints every 3 steps, a GIF grid at the end."""
    d = tmp_path_factory.mktemp('video')
    torch.set_num_threads(1)
    return train(VIDEO + ['--results-dir', str(d), '--max-steps', '6', '--ckpt-every', '3', '--sample-every', '6']).exp_dir


def test_run_writes_checkpoints_gif_and_video_weights(run6):
    ckpt = read_checkpoint(run6 / 'checkpoints' / '0000006.pt')
    assert ckpt['config']['num_frames'] == 2 and ckpt['config']['variant'] == 'VideoDiT'
    gif = Image.open(run6 / 'samples' / '0000006.gif')
    assert sum(1 for _ in ImageSequence.Iterator(gif)) == 2                     # one GIF frame per clip frame
    m = load_video(run6 / 'ema.safetensors')
    assert _same(m.state_dict(), ckpt['ema'])
    first = torch.load(run6 / 'checkpoints' / '0000003.pt', weights_only=False)['model']
    assert not _same(first, ckpt['model'])                                       # it trained


def test_init_from_image_copies_the_spatial_blocks(run6):
    from dit_edu.checkpoints import read_state_dict
    from dit_edu.video_train import SHIPPED_IMAGE
    from dit_edu.video import VideoDiT_models, init_from_image
    sd = read_state_dict(SHIPPED_IMAGE)[0]
    v = VideoDiT_models['VideoDiT-Nano/4'](num_frames=2)
    init_from_image(v, sd)
    assert torch.equal(v.blocks[3].attn.qkv.weight, sd['blocks.3.attn.qkv.weight'])
    assert all((b.adaLN_modulation[-1].weight == 0).all() for b in v.temporal_blocks)


def test_resume_equals_uninterrupted(run6, tmp_path):
    """Resuming from step 3 reaches the same weights at step 6, bit for bit."""
    (tmp_path / 'run' / 'checkpoints').mkdir(parents=True)
    shutil.copy(run6 / 'checkpoints' / '0000003.pt', tmp_path / 'run' / 'checkpoints')
    shutil.copy(run6 / 'args.json', tmp_path / 'run')              # a run folder, as dit-train makes it
    train(['--resume', str(tmp_path / 'run'), '--max-steps', '6', '--sample-every', '0'])
    a, b = read_checkpoint(run6 / 'checkpoints' / '0000006.pt'), read_checkpoint(tmp_path / 'run' / 'checkpoints' / '0000006.pt')
    assert _same(a['model'], b['model']) and _same(a['ema'], b['ema'])


def test_ddp_two_processes_equal_one(run6, tmp_path):
    """2 gloo processes with global batch 4 make the same 3 updates as the 1-process run."""
    script = tmp_path / 'run.py'; script.write_text(RUN + "\n")
    with socket.socket() as sk: sk.bind(('127.0.0.1', 0)); port = sk.getsockname()[1]
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(port), str(script)] + VIDEO + [
        '--results-dir', str(tmp_path), '--max-steps', '3', '--ckpt-every', '3', '--sample-every', '0']
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = read_checkpoint(run6 / 'checkpoints' / '0000003.pt'), read_checkpoint(next(tmp_path.glob('*-VideoDiT-Nano-4')) / 'checkpoints' / '0000003.pt')
    assert b['data']['world'] == 2
    for part in ('model', 'ema'):
        for k in a[part]:
            x, y = a[part][k], b[part][k]
            if k.endswith('attn.qkv.bias'):                    # the key bias gets a gradient of pure rounding noise (softmax
                D = len(x) // 3; x, y = x[torch.arange(len(x)) // D != 1], y[torch.arange(len(y)) // D != 1]   # ignores it): Adam
            torch.testing.assert_close(x, y, atol=2e-5, rtol=1e-4, msg=f'{part}.{k}')                      # amplifies it


def test_video_flags_need_the_video_dataset(tmp_path):
    with pytest.raises(ValueError, match='moving-fmnist'): train(['--init-from', 'none', '--results-dir', str(tmp_path)])
    with pytest.raises(ValueError, match='moving-fmnist'): train(['--init-lr-scale', '1', '--results-dir', str(tmp_path)])
    with pytest.raises(ValueError, match='copies none'):
        train(VIDEO + ['--init-from', 'none', '--init-lr-scale', '0.5', '--results-dir', str(tmp_path)])


def test_dit_sample_writes_gif_and_npz(run6, tmp_path):
    """The installed command: an animated grid, and arr_0 uint8 (N, F, H, W, C) with labels."""
    base = ['dit-sample', '--ckpt', str(run6 / 'ema.safetensors'), '--class-labels', '3', '7', '1', '--num-sampling-steps', '2']
    for out in ('clips.gif', 'clips.npz'):
        r = subprocess.run(base + ['--out', str(tmp_path / out)], env=_env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    z = np.load(tmp_path / 'clips.npz')
    assert z['arr_0'].shape == (3, 2, 36, 36, 1) and z['arr_0'].dtype == np.uint8 and z['labels'].tolist() == [3, 7, 1]
    gif = [np.array(f.convert('L')) for f in ImageSequence.Iterator(Image.open(tmp_path / 'clips.gif'))]
    assert len(gif) == 2 and not np.array_equal(gif[0], gif[1])


@pytest.mark.skipif(not SHIPPED_VIDEO.is_file(), reason='no shipped video model')
def test_shipped_video_model_by_flag(tmp_path):
    r = subprocess.run(['dit-sample', '--shipped', 'video', '--class-labels', '0', '--num-sampling-steps', '2', '--out', str(tmp_path / 'c.npz')],
                       env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    m = load_video(SHIPPED_VIDEO)
    assert np.load(tmp_path / 'c.npz')['arr_0'].shape == (1, m.num_frames, m.input_size, m.input_size, 1)


def _ckpt(folder, step):
    return read_checkpoint(next(Path(folder).glob('*-VideoDiT-Nano-4')) / 'checkpoints' / f'{step:07d}.pt')


def test_grad_checkpointing_recomputes_and_changes_no_weight(run6, tmp_path):
    """--grad-checkpointing reaches the video model (every layer recomputed); in float32 the weights are the same."""
    t = train(VIDEO + ['--results-dir', str(tmp_path), '--max-steps', '3', '--ckpt-every', '3', '--sample-every', '0',
                       '--grad-checkpointing'])
    assert t.model_raw.grad_checkpointing == -1 and t.model_raw.checkpointed_blocks() == len(t.model_raw.blocks)
    a = read_checkpoint(run6 / 'checkpoints' / '0000003.pt')
    assert _same(a['model'], _ckpt(tmp_path, 3)['model'])


def test_init_lr_scale_trains_the_image_weights_slower_and_resumes(tmp_path):
    """--init-lr-scale 0.5: two optimizer groups, the copied weights learn at half the rate; resume is exact."""
    from dit_edu.checkpoints import read_state_dict
    from dit_edu.video_train import SHIPPED_IMAGE
    flags = VIDEO + ['--max-steps', '4', '--ckpt-every', '2', '--sample-every', '0', '--init-lr-scale', '0.5']
    t = train(flags + ['--results-dir', str(tmp_path / 'a')])
    groups = t.opt.param_groups
    assert [g.get('lr_scale', 1.0) for g in groups] == [1.0, 0.5] and groups[1]['lr'] == 0.5 * groups[0]['lr']
    copied = {id(p) for p in groups[1]['params']}
    assert id(t.model_raw.blocks[0].attn.qkv.weight) in copied and id(t.model_raw.temporal_blocks[0].attn.qkv.weight) not in copied
    image = read_state_dict(SHIPPED_IMAGE)[0]['blocks.0.attn.qkv.weight']
    assert not torch.equal(t.model_raw.blocks[0].attn.qkv.weight.detach().cpu(), image)   # trained, not frozen
    run = tmp_path / 'b' / 'run' / 'checkpoints'
    run.mkdir(parents=True)
    first = next((tmp_path / 'a').glob('*-VideoDiT-Nano-4'))
    shutil.copy(first / 'checkpoints' / '0000002.pt', run)
    shutil.copy(first / 'args.json', run.parent)                   # a run folder, as dit-train makes it
    train(['--resume', str(run.parent), '--max-steps', '4', '--sample-every', '0'])
    a, b = _ckpt(tmp_path / 'a', 4), read_checkpoint(run / '0000004.pt')
    assert _same(a['model'], b['model']) and _same(a['ema'], b['ema'])
