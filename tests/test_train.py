"""dit-train end to end: resume after SIGKILL, DDP equivalence, bad checkpoints and paths, NaN stop, resume flags and litter."""
import json, os, random, shutil, signal, socket, struct, subprocess, sys, time, zipfile
from pathlib import Path

import pytest
import torch

from dit_edu.cli import UserError
from dit_edu.training import make_ema
from dit_edu.train import train, make_train_step, step_randomness
from dit_edu.runs import read_checkpoint, save_checkpoint
from dit_edu.model import DiT_models
from dit_edu.diffusion import create_diffusion
from conftest import ROOT, RUN, child_env as _env

TINY = ['--model', 'DiT-Nano/8', '--image-size', '32', '--global-batch-size', '8', '--log-every', '5', '--sample-every', '0', '--no-progress',
        '--warmup-steps', '3']



def _ckpt(run_dir, step):
    return read_checkpoint(Path(run_dir) / 'checkpoints' / f'{step:07d}.pt')


def _first_metrics(run_dir):
    return json.loads((Path(run_dir) / 'metrics.jsonl').read_text().splitlines()[0])


def _torchrun2(tmp_path, args):
    """dit-train under torchrun with 2 gloo processes (TINY settings, results in tmp_path)."""
    script = tmp_path / 'run.py'; script.write_text(RUN + "\n")
    with socket.socket() as sk: sk.bind(('127.0.0.1', 0)); port = sk.getsockname()[1]  # a free port
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(port), str(script)] + TINY + [
        '--results-dir', str(tmp_path)] + args
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)


def _same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_step_changes_weights_and_lowers_loss():
    torch.manual_seed(0)
    m = DiT_models['DiT-Nano/8'](input_size=32, in_channels=1, num_classes=10)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0)
    step = make_train_step(m, create_diffusion(""), opt, make_ema(m), ema_decay=0.9)
    x, y = torch.rand(8, 1, 32, 32) * 2 - 1, torch.arange(8)
    t, noise, _, _ = step_randomness(0, 0, x.shape, 1000)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    losses = [step(x, y, t, noise).item() for _ in range(10)]
    assert not _same(before, m.state_dict())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """A 100-step run in this process (the reference for the resume and corruption tests)."""
    d = tmp_path_factory.mktemp('full')
    torch.set_num_threads(1)
    t = train(TINY + ['--results-dir', str(d), '--max-steps', '100', '--ckpt-every', '20'])
    return t.exp_dir


def test_sigkill_then_resume_equals_uninterrupted(uninterrupted, tmp_path):
    cmd = [sys.executable, '-c', RUN] + TINY + ['--results-dir', str(tmp_path), '--max-steps', '100', '--ckpt-every', '20']
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not list(tmp_path.glob('*/checkpoints/0000020.pt')) and p.poll() is None and time.time() < deadline: time.sleep(0.02)
    assert p.poll() is None, f"run ended before it could be killed: {p.stderr.read().decode()[-2000:]}"
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL
    run = next(tmp_path.glob('*-DiT-Nano-8'))
    assert not (run / 'checkpoints' / '0000100.pt').exists()
    torch.set_num_threads(1)
    train(['--resume', str(run), '--no-progress'])
    a, b = _ckpt(uninterrupted, 100), _ckpt(run, 100)
    for part in ('model', 'ema'): assert _same(a[part], b[part]), part
    sa, sb = a['opt']['state'], b['opt']['state']
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])


def test_corrupt_or_truncated_checkpoint_is_refused(uninterrupted, tmp_path):
    good = (uninterrupted / 'checkpoints' / '0000020.pt').read_bytes()
    cut = tmp_path / 'run' / 'checkpoints' / '0000020.pt'; cut.parent.mkdir(parents=True)
    cut.write_bytes(good[:len(good) * 2 // 3])
    with pytest.raises(ValueError, match='truncated'): train(['--resume', str(cut)])
    zi = next(i for i in zipfile.ZipFile(uninterrupted / 'checkpoints' / '0000020.pt').infolist() if '/data/' in i.filename and i.file_size > 1000)
    name_len, extra_len = struct.unpack('<HH', good[zi.header_offset + 26:zi.header_offset + 30])  # local header
    off = zi.header_offset + 30 + name_len + extra_len + 100
    bad = bytearray(good); bad[off] ^= 0x55
    flip = tmp_path / 'flip.pt'; flip.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match='corrupt'): train(['--resume', str(flip)])


def test_wrong_data_path_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match='does not exist'): train(TINY + ['--data-path', str(tmp_path / 'nope')])
    with pytest.raises(UserError, match='dataset-fashion-mnist'):
        train(TINY + ['--dataset', 'fashion-mnist', '--data-path', str(tmp_path)])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('every', [['--ckpt-every', '1', '--log-every', '100'], ['--ckpt-every', '2', '--log-every', '1']])
def test_diverged_update_is_never_saved(tmp_path, every):
    """--lr 1e30: the first update makes the weights about 1e28 while its loss (computed before it) is finite; no
    checkpoint may hold such weights (their loss is NaN), and the one the message names as good is good."""
    with pytest.raises(FloatingPointError, match='NaN or inf') as e:
        train(TINY + ['--results-dir', str(tmp_path), '--max-steps', '40', '--lr', '1e30', '--warmup-steps', '0'] + every)
    ckpts = sorted(tmp_path.glob('*/checkpoints/*.pt'))
    x, y = torch.rand(8, 1, 32, 32) * 2 - 1, torch.arange(8)
    t, noise, _, _ = step_randomness(0, 0, x.shape, 1000)
    for c in ckpts:                                                  # finite weights that also give a finite loss
        ck = read_checkpoint(c)
        for part in ('model', 'ema'):
            m = DiT_models['DiT-Nano/8'](input_size=32, in_channels=1, num_classes=10)
            m.load_state_dict(ck[part])
            with torch.no_grad(): loss = create_diffusion("").training_losses(m, x, t, dict(y=y), noise=noise)["loss"]
            assert torch.isfinite(loss).all(), (c, part)
    assert (str(ckpts[-1]) if ckpts else '(none yet)') in str(e.value)


@pytest.mark.parametrize('flags', [['--lr', '0.5'], ['--model', 'DiT-Nano/4'], ['--global-batch-size', '16'],
                                   ['--global-seed', '3'], ['--ema-decay', '0.5']])
def test_resume_refuses_flags_that_contradict_the_run(uninterrupted, flags):
    "A resumed run takes its flags from the checkpoint (RESUME_OVERRIDES aside): a different value is refused, naming it."
    with pytest.raises(UserError, match=flags[0]): train(['--resume', str(uninterrupted), '--no-progress'] + flags)


def test_resume_cleans_litter(uninterrupted, tmp_path):
    """Resuming a run killed after step 40 (but whose metrics went on): cut-off checkpoint temp files are deleted,
    metrics rows past the checkpoint do not come twice."""
    run = tmp_path / 'run'; shutil.copytree(uninterrupted, run)
    for c in (run / 'checkpoints').glob('*.pt'):
        if int(c.stem) > 40: c.unlink()
    partial = run / 'checkpoints' / '.0000060.pt.tmp4242'; partial.write_bytes(b'PK' + bytes(1000))
    torch.set_num_threads(1)
    train(['--resume', str(run), '--max-steps', '60', '--no-progress'])
    assert not partial.exists()
    steps = [json.loads(l)['step'] for l in (run / 'metrics.jsonl').read_text().splitlines()]
    assert steps == list(range(5, 61, 5)), steps


def test_checkpoint_holds_only_tensors_and_old_ones_still_load(uninterrupted, tmp_path):
    """New checkpoints load with a plain weights_only=True; a checkpoint of an older dit-train (numpy and Python RNG
    states pickled, arguments a dict) still loads, through an allow-list of numpy's array globals only, and resumes
    exactly as the new one does."""
    import numpy as np
    new = uninterrupted / 'checkpoints' / '0000020.pt'
    assert torch.serialization.get_unsafe_globals_in_checkpoint(new) == []
    old = read_checkpoint(new)
    old['rng'] = dict(torch=old['rng']['torch'], cuda=None, python=random.getstate(), numpy=np.random.get_state())
    p = save_checkpoint(tmp_path / 'old' / 'checkpoints' / '0000020.pt', old)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(p)          # numpy's globals: the old format
    torch.set_num_threads(1)
    a = train(['--resume', str(p), '--max-steps', '21', '--no-progress'])
    (tmp_path / 'new' / 'checkpoints').mkdir(parents=True); shutil.copy(new, tmp_path / 'new' / 'checkpoints')
    b = train(['--resume', str(tmp_path / 'new'), '--max-steps', '21', '--no-progress'])
    assert a.step == b.step == 21 and _same(a.state()['model'], b.state()['model'])


def test_ddp_two_processes_equal_one(uninterrupted, tmp_path):
    """2 gloo processes with global batch 8 make the same update as the uninterrupted 1-process run."""
    r = _torchrun2(tmp_path, ['--max-steps', '20', '--ckpt-every', '20'])
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _ckpt(uninterrupted, 20), _ckpt(next(tmp_path.glob('*-DiT-Nano-8')), 20)
    assert b['data']['world'] == 2
    for part in ('model', 'ema'):
        for k in a[part]: torch.testing.assert_close(a[part][k], b[part][k], atol=2e-5, rtol=1e-4, msg=f'{part}.{k}')


def test_ddp_with_compile_matches_eager_run(uninterrupted, tmp_path):
    """2 gloo processes on the compiled fast path (the multi-GPU configuration) train as the 1-process eager run."""
    r = _torchrun2(tmp_path, ['--max-steps', '5', '--ckpt-every', '5', '--compile'])
    assert r.returncode == 0, r.stderr[-3000:]
    run = next(tmp_path.glob('*-DiT-Nano-8'))
    assert _ckpt(run, 5)['args']['compile'] and _ckpt(run, 5)['data']['world'] == 2
    fast, eager = _first_metrics(run), _first_metrics(uninterrupted)
    assert fast['step'] == eager['step'] == 5
    assert abs(fast['loss'] - eager['loss']) < 1e-4 * eager['loss'], (fast['loss'], eager['loss'])


def test_compiled_fast_path_matches_eager_run(uninterrupted, tmp_path):
    """--compile (the default on CUDA) on a CPU: the sync-free loss compiled with the model trains as the eager run does;
    its checkpoint also resumes when the saved arguments predate the newer flags."""
    from dit_edu.runs import save_checkpoint
    torch._dynamo.reset()
    t = train(TINY + ['--results-dir', str(tmp_path), '--max-steps', '5', '--ckpt-every', '5', '--compile', '--grad-checkpointing', '1'])
    assert t.args.compile and t.args.grad_checkpointing == 1 and t.model_raw.checkpointed_blocks() == 1
    fast, eager = _first_metrics(t.exp_dir), _first_metrics(uninterrupted)
    assert fast['step'] == eager['step'] == 5
    assert abs(fast['loss'] - eager['loss']) < 1e-4 * eager['loss'], (fast['loss'], eager['loss'])
    old = read_checkpoint(t.exp_dir / 'checkpoints' / '0000005.pt')
    for k in ('attention', 'bf16_residual'): old['args'].pop(k)
    old['args'].update(compile=False, grad_checkpointing=False)             # how runs before these flags stored them
    p = save_checkpoint(tmp_path / 'old' / 'checkpoints' / '0000005.pt', old)
    again = train(['--resume', str(p), '--max-steps', '6', '--no-progress'])
    assert again.step == 6 and again.args.grad_checkpointing == 0 and not again.args.compile
