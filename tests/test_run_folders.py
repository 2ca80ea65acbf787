"""Nothing outside a run is touched, no run is written twice at once (issue 25, section 1): a loose checkpoint goes on in a
new run folder, a live run's folder is locked, a cut-off extraction is refused, an earlier VAE or sample set is never
overwritten. Every command is called in this process on files dit-train and dit-extract really wrote."""
import fcntl, hashlib, json, os, shutil
from pathlib import Path

import pytest
import torch

from dit_edu.train import main as train_main
from dit_edu.runs import read_checkpoint
from dit_edu.data import extract, extract_main, FASHION_DIR
from dit_edu.sample import main_ddp as sample_ddp_main

TINY = ['--model', 'DiT-Nano/8', '--image-size', '32', '--global-batch-size', '8', '--max-steps', '2', '--ckpt-every', '1',
        '--log-every', '1', '--sample-every', '0', '--warmup-steps', '0', '--no-progress', '--device', 'cpu']


def _one_line(err, prog):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'{prog}: error: ') and 'Traceback' not in err, err
    return lines[0]


def _tree(root):
    "Every folder and file under `root` with the hash of its bytes: a snapshot to compare."
    return {str(p.relative_to(root)): p.is_dir() or hashlib.sha1(p.read_bytes()).hexdigest() for p in Path(root).rglob('*')}


def _steps(run): return [json.loads(l)['step'] for l in (run / 'metrics.jsonl').read_text().splitlines()]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A 2-step dit-train run (a checkpoint each step)."
    d = tmp_path_factory.mktemp('made')
    torch.set_num_threads(1)
    train_main(TINY + ['--results-dir', str(d / 'results')])
    return next((d / 'results').iterdir())


@pytest.mark.parametrize('where', ['dl', 'checkpoints'])
def test_loose_checkpoint_goes_on_in_a_new_run_folder(run, where, tmp_path, capsys):
    """D/dl/0000002.pt, or D/checkpoints/0000002.pt beside a stranger's args.json: D is not the run's folder. Nothing in D
    changes; the run goes on from step 2 in a new folder under --results-dir, as it would have in place, and says so."""
    D = tmp_path / 'D'
    (D / where).mkdir(parents=True)
    shutil.copy(run / 'checkpoints' / '0000002.pt', D / where)
    (D / 'args.json').write_text(json.dumps(dict(model='DiT-Nano/8', mine=True)))
    for f in ('ema.safetensors', 'metrics.jsonl'): (D / f).write_text('not dit-train\'s\n')
    before = _tree(tmp_path)
    train_main(['--resume', str(D / where / '0000002.pt'), '--max-steps', '3', '--results-dir', str(tmp_path / 'new')])
    out = capsys.readouterr().out
    new = next((tmp_path / 'new').iterdir())
    assert {k: v for k, v in _tree(tmp_path).items() if not k.startswith('new')} == before
    assert f"lies outside a run folder; its run goes on from step 2 in a new one, {new}" in out, out
    assert sorted(p.name for p in (new / 'checkpoints').iterdir()) == ['0000003.pt'] and _steps(new) == [3]
    in_place = tmp_path / 'run'; shutil.copytree(run, in_place)                 # the same checkpoint, resumed in its folder
    train_main(['--resume', str(in_place), '--max-steps', '3'])
    a, b = read_checkpoint(new / 'checkpoints' / '0000003.pt'), read_checkpoint(in_place / 'checkpoints' / '0000003.pt')
    assert a['step'] == b['step'] == 3 and all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    assert _steps(in_place) == [1, 2, 3]


def test_results_dir_does_not_move_a_run_folder(run, tmp_path, capsys):
    "--results-dir with a run folder's own checkpoint: refused (it goes on in place), nothing written."
    before = _tree(run)
    with pytest.raises(SystemExit) as e: train_main(['--resume', str(run), '--results-dir', str(tmp_path / 'elsewhere')])
    assert e.value.code == 2 and 'goes on in place' in _one_line(capsys.readouterr().err, 'dit-train')
    assert _tree(run) == before and not (tmp_path / 'elsewhere').exists()


def test_a_run_folder_in_use_is_refused_and_a_stale_lock_is_taken(run, tmp_path, capsys):
    """While another process holds RUN/.lock, `dit-train --resume RUN` exits 2 with one line naming it and writes nothing;
    the lock file of a process that died (its pid left behind, no lock held) is taken over."""
    r = tmp_path / 'run'; shutil.copytree(run, r)
    fd = os.open(r / '.lock', os.O_RDWR | os.O_CREAT)                        # the first run, alive (as seen from another fd)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); os.write(fd, b'424242')
    before = _tree(r)
    with pytest.raises(SystemExit) as e: train_main(['--resume', str(r), '--max-steps', '3'])
    line = _one_line(capsys.readouterr().err, 'dit-train')
    assert e.value.code == 2 and 'in use by another dit-train (pid 424242)' in line, line
    assert _tree(r) == before
    os.close(fd)                                                             # it dies; its pid stays in the file
    train_main(['--resume', str(r), '--max-steps', '3'])
    assert _steps(r) == [1, 2, 3]


@pytest.fixture
def latents(tmp_path):
    "8 Fashion-MNIST images encoded by the shipped VAE with dit-extract."
    if not FASHION_DIR.is_dir(): pytest.skip('needs Debian dataset-fashion-mnist')
    out = tmp_path / 'lat'
    extract(['--data-path', str(FASHION_DIR), '--out', str(out), '--limit', '8', '--batch-size', '4', '--num-workers', '0',
             '--device', 'cpu'])
    return out


def test_cut_off_extraction_is_refused(latents, tmp_path, monkeypatch, capsys):
    """dit-extract again into a folder of latents, killed after its first batch: the old meta.json went first, so dit-train
    refuses the folder in one line (exit 2) instead of training on rows never written; a meta.json that disagrees with the
    arrays is refused too. No run folder is made."""
    import dit_edu.data as D
    encode, calls = D.encode_latents, []
    def killed(*a, **k):
        calls.append(1)
        if len(calls) > 2: raise RuntimeError('killed')                   # after the first batch (plain and mirrored)
        return encode(*a, **k)
    monkeypatch.setattr(D, 'encode_latents', killed)
    with pytest.raises(RuntimeError, match='killed'):
        extract(['--data-path', str(FASHION_DIR), '--out', str(latents), '--limit', '8', '--batch-size', '4',
                 '--num-workers', '0', '--device', 'cpu'])
    monkeypatch.undo()
    assert not (latents / 'meta.json').exists() and (latents / 'latents.npy').exists()
    res = ['--data-path', str(latents), '--results-dir', str(tmp_path / 'res'), '--model', 'DiT-Nano/2', '--global-batch-size', '4',
           '--max-steps', '1', '--no-progress', '--device', 'cpu']
    with pytest.raises(SystemExit) as e: train_main(res)
    line = _one_line(capsys.readouterr().err, 'dit-train')
    assert e.value.code == 2 and '--data-path' in line and 'an extraction was cut off' in line, line
    (latents / 'meta.json').write_text(json.dumps(dict(n=16, shape=[4, 8, 8], scale=1.0, num_classes=10, vae='fmnist')))
    with pytest.raises(SystemExit) as e: train_main(res)
    line = _one_line(capsys.readouterr().err, 'dit-train')
    assert e.value.code == 2 and 'meta.json says 16 latents' in line, line
    assert not (tmp_path / 'res').exists()


def test_train_vae_never_overwrites_a_folder(tmp_path, capsys):
    "dit-train-vae --out an existing VAE folder: exit 2, one line, the folder as it was."
    pytest.importorskip('diffusers')
    from dit_edu.vae_train import main as vae_main
    out = tmp_path / 'vae'; out.mkdir(); (out / 'config.json').write_text('{"earlier": 1}')
    with pytest.raises(SystemExit) as e: vae_main(['--out', str(out), '--steps', '1'])
    assert e.value.code == 2 and '--out' in _one_line(capsys.readouterr().err, 'dit-train-vae')
    assert [p.name for p in out.iterdir()] == ['config.json'] and (out / 'config.json').read_text() == '{"earlier": 1}'


def test_sample_ddp_outputs_of_two_runs_never_collide(run, tmp_path, capsys):
    """Two runs' ema.safetensors get two output names in one --sample-dir; the same name again (another results folder's
    000-DiT-Nano-8) is refused in one line, exit 2, and the first output stays as it was."""
    other = tmp_path / 'b' / '001-DiT-Nano-8'; shutil.copytree(run, other)
    twin = tmp_path / 'c' / run.name; shutil.copytree(run, twin)
    flags = ['--sample-dir', str(tmp_path / 's'), '--num-fid-samples', '2', '--per-proc-batch-size', '2',
             '--num-sampling-steps', '2', '--device', 'cpu']
    for r in (run, other): sample_ddp_main(['--ckpt', str(r / 'ema.safetensors')] + flags)
    npz = sorted(p.name for p in (tmp_path / 's').glob('*.npz'))
    assert npz == [f'{n}-ema-cfg-4.0-dpm++2m-2-seed-0.npz' for n in ('000-DiT-Nano-8', '001-DiT-Nano-8')], npz
    before = _tree(tmp_path / 's')
    with pytest.raises(SystemExit) as e: sample_ddp_main(['--ckpt', str(twin / 'ema.safetensors')] + flags)
    line = _one_line(capsys.readouterr().err, 'dit-sample-ddp')
    assert e.value.code == 2 and 'exists already' in line, line
    assert _tree(tmp_path / 's') == before
