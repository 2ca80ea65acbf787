"""The console scripts as a user meets them: exit 0 on success; a bad flag or file is one line naming it and exit 2,
before any work; code hidden in a checkpoint never runs; what dit-train writes, dit-sample and the widgets read;
two runs started together never share a folder. Most cases call main(argv) in this process (import torch once);
a few go through the installed commands to check the exit statuses themselves."""
import json, os, shutil, subprocess, sys, time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dit_edu.cli import run_cli
from dit_edu.train import main as train_main
from dit_edu.runs import experiment_dir, save_checkpoint, read_checkpoint
from dit_edu.sample import main as sample_main, main_ddp as sample_ddp_main, load_model, DEFAULT_CKPT
from dit_edu.bench import main as bench_main
from dit_edu.cli import info_main
from dit_edu.data import extract_main
from conftest import ROOT, child_env as _env

MAINS = {'dit-train': train_main, 'dit-sample': sample_main, 'dit-sample-ddp': sample_ddp_main, 'dit-bench': bench_main,
         'dit-info': info_main, 'dit-extract': extract_main}
TINY = ['--model', 'DiT-Nano/8', '--image-size', '32', '--global-batch-size', '8', '--max-steps', '2', '--ckpt-every', '1',
        '--log-every', '1', '--sample-every', '0', '--warmup-steps', '0', '--no-progress']



def _command(name):
    path = shutil.which(name)
    assert path, f"console script {name} is not installed: pip install -e ."
    return path


def _one_line(err, prog):
    "The stderr of a user error: exactly one line, from `prog`, no traceback."
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'{prog}: error: ') and 'Traceback' not in err, err
    return lines[0]


class Planted:
    "Unpickling this runs code: it writes the marker file (what a crafted checkpoint could do)."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    "Bad files a user might pass: empty, not safetensors, NaN weights, code in a pickle, a missing path."
    d = tmp_path_factory.mktemp('files')
    (d / 'zero.pt').write_bytes(b'')
    (d / 'bad.safetensors').write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"not": json')
    sd = load_file(str(DEFAULT_CKPT))
    sd['final_layer.linear.weight'][0, 0] = float('nan')
    from safetensors import safe_open
    with safe_open(str(DEFAULT_CKPT), framework='pt') as f: meta = f.metadata()
    save_file(sd, str(d / 'nan.safetensors'), metadata=meta)
    torch.save({'model': Planted(d / 'MARKER'), 'step': 1}, d / 'evil.pt')
    return dict(zero=d / 'zero.pt', bad_st=d / 'bad.safetensors', nan_st=d / 'nan.safetensors', evil=d / 'evil.pt',
                missing=d / 'missing.pt', marker=d / 'MARKER', dir=d)


EXTRACT = ['--data-path', '{missing}', '--out', 'lat']
BAD = [  # (command, argv, what its one line must name); the classes: range, cross-flag, file
    ('dit-train', ['--global-batch-size', '0'], '--global-batch-size'),
    ('dit-train', ['--global-batch-size', 'x'], '--global-batch-size'),
    ('dit-train', ['--ckpt-every', '0'], '--ckpt-every'),
    ('dit-train', ['--log-every', '0'], '--log-every'),
    ('dit-train', ['--num-classes', '0'], '--num-classes'),
    ('dit-train', ['--num-classes', '-3'], '--num-classes'),
    ('dit-train', ['--ema-decay', '5'], '--ema-decay'),
    ('dit-train', ['--lr', 'inf'], '--lr'),
    ('dit-train', ['--lr', '0'], '--lr'),
    ('dit-train', ['--max-steps', '0'], '--max-steps'),
    ('dit-train', ['--epochs', '0'], '--epochs'),
    ('dit-train', ['--warmup-steps', '-1'], '--warmup-steps'),
    ('dit-train', ['--class-dropout-prob', '1'], '--class-dropout-prob'),
    ('dit-train', ['--cfg-scale', 'nan'], '--cfg-scale'),
    ('dit-train', ['--grad-checkpointing', '-2'], '--grad-checkpointing'),
    ('dit-train', ['--image-size', '30'], '--image-size'),                   # not a multiple of DiT-Nano/4's patch
    ('dit-train', ['--num-classes', '5'], '--num-classes'),                  # Fashion-MNIST has 10
    ('dit-train', ['--global-batch-size', '100000'], '--global-batch-size'),  # more than the dataset
    ('dit-train', ['--data-path', '{missing}'], '--data-path'),
    ('dit-train', ['--dataset', 'moving-fmnist', '--init-lr-scale', '-1'], '--init-lr-scale'),
    ('dit-train', ['--dataset', 'moving-fmnist', '--init-from', 'none', '--init-lr-scale', '0.5'], '--init-lr-scale'),
    ('dit-train', ['--init-lr-scale', '1'], '--init-lr-scale'),                 # a video flag on images
    ('dit-train', ['--resume', '{missing}'], '--resume'),
    ('dit-train', ['--resume', '{zero}'], '--resume'),
    ('dit-train', ['--resume', '{bad_st}'], '--resume'),
    ('dit-train', ['--resume', '{evil}'], '--resume'),
    ('dit-sample', ['--num-sampling-steps', '0'], '--num-sampling-steps'),
    ('dit-sample', ['--num-sampling-steps', '500'], '--num-sampling-steps'),  # dpm++2m finds fewer distinct steps
    ('dit-sample', ['--sampler', 'ddpm', '--num-sampling-steps', '2000'], '--num-sampling-steps'),
    ('dit-sample', ['--cfg-scale', 'nan'], '--cfg-scale'),
    ('dit-sample', ['--out', 'x.gif'], '--out'),
    ('dit-sample', ['--model', 'DiT-XL/2'], '--image-size'),
    ('dit-sample', ['--model', 'DiT-XL/2', '--image-size', '260'], '--image-size'),
    ('dit-sample', ['--class-labels', '10'], '--class-labels'),
    ('dit-sample', ['--eval', '-1'], '--eval'),
    ('dit-sample', ['--ckpt', '{missing}'], '--ckpt'),
    ('dit-sample', ['--ckpt', '{zero}'], '--ckpt'),
    ('dit-sample', ['--ckpt', '{bad_st}'], '--ckpt'),
    ('dit-sample', ['--ckpt', '{nan_st}'], '--ckpt'),
    ('dit-sample', ['--ckpt', '{evil}'], '--ckpt'),
    ('dit-sample-ddp', ['--num-fid-samples', '0'], '--num-fid-samples'),
    ('dit-sample-ddp', ['--per-proc-batch-size', '0'], '--per-proc-batch-size'),
    ('dit-sample-ddp', ['--ckpt', '{nan_st}'], '--ckpt'),
    ('dit-bench', ['--batch-size', '0'], '--batch-size'),
    ('dit-bench', ['--steps', '0'], '--steps'),
    ('dit-bench', ['--modes', 'slow'], '--modes'),
    ('dit-bench', ['--memory-budget', '2'], '--memory-budget'),
    ('dit-bench', ['--image-size', '30'], '--image-size'),
    ('dit-bench', ['--sample-steps', '0'], '--sample-steps'),
    ('dit-bench', ['--micro', '3'], '--micro'),
    ('dit-bench', ['--inductor', 'coordinate_descent_tuning'], '--inductor'),
    ('dit-info', ['--image-size', '0'], '--image-size'),
    ('dit-info', ['--image-size', 'x'], '--image-size'),
    ('dit-info', ['--image-size', '36'], '--image-size'),                    # latents of 4.5 do not exist
    ('dit-info', ['--image-size', '32'], '--image-size'),                    # 4x4 latents: no whole 8x8 patch for DiT-*/8
    ('dit-info', ['--model', 'DiT-XL/2', '--image-size', '264'], '--image-size'),  # 33x33 latents, 2x2 patches
    ('dit-info', ['--model', 'DiT-XXL/2'], '--model'),
    ('dit-extract', [], '--data-path'),
    ('dit-extract', EXTRACT + ['--batch-size', '0'], '--batch-size'),
    ('dit-extract', EXTRACT + ['--num-workers', '-1'], '--num-workers'),
    ('dit-extract', EXTRACT + ['--seed', '-1'], '--seed'),
    ('dit-extract', EXTRACT + ['--image-size', '0'], '--image-size'),
    ('dit-extract', EXTRACT + ['--image-size', '30'], '--image-size'),
    ('dit-extract', EXTRACT, '--data-path'),                                 # no such folder
    ('dit-extract', ['--data-path', '{dir}', '--out', 'lat'], '--data-path'),  # a folder without class subfolders of images
]


@pytest.mark.parametrize('prog,argv,flag', BAD, ids=[f"{p} {' '.join(a)}" for p, a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2_before_any_work(prog, argv, flag, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                                    # anything a command writes would land here
    argv = [a.format(**files) for a in argv] + (['--results-dir', str(tmp_path / 'results')] if prog == 'dit-train' else [])
    with pytest.raises(SystemExit) as e: MAINS[prog](argv + (['--device', 'cpu'] if prog == 'dit-bench' else []))
    line = _one_line(capsys.readouterr().err, prog)
    assert e.value.code == 2 and flag in line, line
    assert not files['marker'].exists(), "code in the checkpoint ran"
    left = [p for p in tmp_path.rglob('*') if not p.is_dir()] + [p for p in (tmp_path / 'results').glob('*')]
    assert not left, f"a failed start left {left}"


def test_run_folder_is_created_when_named(tmp_path):
    "Two starts that choose a name at the same moment get two folders (the name is taken by an atomic mkdir)."
    from argparse import Namespace
    ns = Namespace(results_dir=str(tmp_path), model='DiT-Nano/8')
    a, b = experiment_dir(ns), experiment_dir(ns)
    assert a != b and a.is_dir() and b.is_dir() and a.name == '000-DiT-Nano-8' and b.name == '001-DiT-Nano-8'


class FullDisk:
    "A file opened for writing on a full disk: every write fails with ENOSPC."
    def __init__(self, *a, **k): self.f = open(*a, **k)
    def write(self, b): raise OSError(28, 'No space left on device')
    def __getattr__(self, k): return getattr(self.f, k)
    def __enter__(self): return self
    def __exit__(self, *a): self.f.close()


def test_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    "A checkpoint write that runs out of space: one line saying so, no temporary file left, exit 1 (not a user error)."
    import dit_edu.runs as T
    monkeypatch.setattr(T, 'open', FullDisk, raising=False)
    target = tmp_path / 'checkpoints' / '0000001.pt'
    with pytest.raises(OSError) as e: save_checkpoint(target, {'w': torch.zeros(1000)})
    assert e.value.errno == 28 and 'disk is full' in str(e.value) and 'inline_container' not in str(e.value)
    assert list(target.parent.iterdir()) == []
    with pytest.raises(SystemExit) as ex: run_cli(lambda argv: save_checkpoint(target, {'w': torch.zeros(10)}), [], 'dit-train')
    err = capsys.readouterr().err.strip()
    assert ex.value.code == 1 and len(err.splitlines()) == 1 and 'disk is full' in err, err


def test_full_disk_at_the_ema_export_is_one_line(tmp_path, monkeypatch, capsys):
    "The last write of a run (ema.safetensors) on a full disk: one line, exit 1, no partial file, the checkpoints kept."
    import dit_edu.runs as T
    pick = lambda path, *a, **k: (FullDisk if Path(path).name.startswith('.ema.safetensors.tmp') else open)(path, *a, **k)
    monkeypatch.setattr(T, 'open', pick, raising=False)
    with pytest.raises(SystemExit) as ex: train_main(TINY + ['--results-dir', str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert ex.value.code == 1 and len(err.splitlines()) == 1 and 'disk is full' in err and 'EMA weights' in err, err
    run, = tmp_path.iterdir()
    left = [p.name for p in run.iterdir() if (p.name.startswith('.') and p.name != '.lock') or p.suffix == '.safetensors']
    assert left == [], left                                         # .lock: the run folder's flock file, by design
    assert sorted(p.name for p in (run / 'checkpoints').iterdir()) == ['0000001.pt', '0000002.pt']


def test_console_scripts_exit_status():
    "The installed commands themselves: a user error exits 2 with one line, a success exits 0."
    runs = {('dit-train', '--global-batch-size', '0'): 2, ('dit-sample', '--cfg-scale', 'nan'): 2,
            ('dit-sample-ddp', '--num-fid-samples', '0'): 2, ('dit-bench', '--steps', '0'): 2, ('dit-info',): 0,
            ('dit-info', '--image-size', '0'): 2, ('dit-extract', '--batch-size', '0'): 2}
    procs = {k: subprocess.Popen([_command(k[0]), *k[1:]], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in runs}
    for k, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == runs[k], (k, p.returncode, err[-2000:])
        if runs[k] == 2: _one_line(err, k[0])
        else: assert 'Traceback' not in err and out.strip(), (k, err)


@pytest.fixture(scope='module')
def two_runs(tmp_path_factory):
    "Two `dit-train` commands started together in one results folder (2 steps each, a checkpoint every step)."
    d = tmp_path_factory.mktemp('race')
    procs = [subprocess.Popen([_command('dit-train'), *TINY, '--results-dir', str(d)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    return sorted(p for p in d.iterdir() if p.is_dir())


def test_two_runs_started_together_get_their_own_folders(two_runs):
    assert len(two_runs) == 2, two_runs
    for run in two_runs:
        assert sorted(p.name for p in (run / 'checkpoints').iterdir()) == ['0000001.pt', '0000002.pt']
        assert [json.loads(l)['step'] for l in (run / 'metrics.jsonl').read_text().splitlines()] == [1, 2]
        assert f'run folder {run}' in (run / 'log.txt').read_text()
        assert (run / 'ema.safetensors').is_file()


def test_a_dit_train_checkpoint_samples(two_runs, tmp_path):
    "dit-sample, load_model and the widgets' loader read what dit-train wrote: its checkpoints and its ema.safetensors."
    from dit_edu.widgets import as_model
    run = two_runs[0]
    ckpt = run / 'checkpoints' / '0000002.pt'
    ema = read_checkpoint(ckpt)['ema']
    for m in (load_model(ckpt), as_model(ckpt), load_model(run / 'ema.safetensors')):
        assert all(torch.equal(v, ema[k]) for k, v in m.state_dict().items())
    out = tmp_path / 's.png'
    r = subprocess.run([_command('dit-sample'), '--ckpt', str(ckpt), '--num-sampling-steps', '2', '--out', str(out)],
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and out.is_file(), r.stderr[-2000:]


def test_code_planted_in_a_run_never_runs(two_runs, files, tmp_path):
    "A crafted pickle as the newest checkpoint of a resumed run folder: refused in one line, exit 2, nothing ran."
    run = tmp_path / 'run'; shutil.copytree(two_runs[1], run)
    shutil.copy(files['evil'], run / 'checkpoints' / '0000003.pt')
    r = subprocess.run([_command('dit-train'), '--resume', str(run)], env=_env(), capture_output=True, text=True, timeout=300)
    line = _one_line(r.stderr, 'dit-train')
    assert r.returncode == 2 and '0000003.pt' in line and 'could run code' in line, line
    assert not files['marker'].exists()
