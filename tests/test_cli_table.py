"""Issue 25, section 6: the classes of bad input, enumerated. Every console script's parser is found by running the
command until it parses (so flags added inside a command join too); every numeric flag refuses NaN, inf, a huge value
and a word, naming itself; every output flag refuses a folder for a file, a file for a folder and an unwritable place;
every --device refuses a device that is not here. Then every loader against hostile files: one ValueError, no traceback,
nothing built."""
import configparser, importlib, json, os, time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dit_edu.cli import Parser, UserError, writable, device_type
from conftest import ROOT

LEFT = {}  # (command, flag): why it is not checked; empty


class Parsed(Exception): pass


def scripts():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    return dict(s.split('=') for s in cfg['DEFAULT']['console_scripts'].split())


@pytest.fixture(scope='module')
def parsers():
    "{command: its Parser}, caught at its first parse_args (no work is done)."
    def grab(self, args=None, namespace=None): raise Parsed(self)
    out = {}
    for prog, target in scripts().items():
        mod, fn = target.split(':')
        with mock.patch.object(Parser, 'parse_args', grab):
            with pytest.raises(Parsed) as e: getattr(importlib.import_module(mod), fn)([])
        out[prog] = e.value.args[0]
    return out


def flags(parsers, pick):
    return [(prog, a) for prog, p in parsers.items() for a in p._actions if a.option_strings and pick(a)]


def _numeric(a):
    if a.type is None or a.choices: return False
    try: return isinstance(a.type('1'), (int, float))
    except Exception: return False


def test_every_console_script_is_walked(parsers):
    assert set(parsers) == set(scripts()) and len(parsers) == 9


@pytest.mark.parametrize('bad', ['nan', 'inf', '-inf', '1e400', 'abc', '-99999999', '1e30'])
def test_every_numeric_flag_refuses_bad_values_naming_itself(parsers, bad):
    found = flags(parsers, _numeric)
    assert len(found) > 40, len(found)
    for prog, a in found:
        try: a.type(bad); accepted = True
        except Exception: accepted = False
        if bad == '1e30' and accepted: continue             # unbounded above by design (counts): not every flag has a top
        flag = a.option_strings[-1]
        with pytest.raises(UserError, match=flag):
            parsers[prog].parse_args([f'{flag}={bad}'])        # '-inf' would read as a flag


def test_every_numeric_flag_states_its_range(parsers):
    plain = [(prog, a.option_strings[-1]) for prog, a in flags(parsers, _numeric)
             if not a.type.__name__.startswith(('an integer', 'a finite number'))]
    assert not plain, f"flags without a stated range (use cli.ranged): {plain}"


def test_seeds_and_image_sizes_are_bounded(parsers):
    for prog, a in flags(parsers, _numeric):
        flag = a.option_strings[-1]
        if (prog, flag) in LEFT: continue
        if 'seed' in flag:
            with pytest.raises(UserError, match=flag): parsers[prog].parse_args([flag, str(2**64)])
        if flag == '--image-size':
            with pytest.raises(UserError, match=flag): parsers[prog].parse_args([flag, '100000'])


OUTPUT_NAMES = ('--out', '--json', '--save-stats', '--sample-dir', '--results-dir', '--profile', '--features-path')


def test_output_flags_refuse_the_wrong_kind_and_unwritable_places(parsers, tmp_path):
    (tmp_path / 'f').write_text('x')
    outs = flags(parsers, lambda a: hasattr(a.type, 'kind'))
    named = {(prog, a.option_strings[-1]) for prog, a in flags(parsers, lambda a: set(a.option_strings) & set(OUTPUT_NAMES))}
    missing = named - {(prog, a.option_strings[-1]) for prog, a in outs} - set(LEFT)
    assert not missing, f"output flags without a `writable` type: {missing}"
    for prog, a in outs:
        flag, p = a.option_strings[-1], parsers[prog]
        wrong = tmp_path if a.type.kind == 'file' else tmp_path / 'f'
        for bad in (wrong, tmp_path / 'f' / 'under', '/proc/dit_edu_probe/x'):
            with pytest.raises(UserError, match=flag): p.parse_args([flag, str(bad)])
    assert sorted(q.name for q in tmp_path.iterdir()) == ['f']       # nothing written


def test_every_device_flag_refuses_devices_not_here(parsers):
    devs = flags(parsers, lambda a: '--device' in a.option_strings)
    assert len(devs) >= 7
    for prog, a in devs:
        if (prog, '--device') in LEFT: continue
        assert a.type is device_type, prog
        for bad in ('foo', 'cuda:99'):
            with pytest.raises(UserError, match='--device'): parsers[prog].parse_args(['--device', bad])


def test_bench_choices(parsers):
    for flag in ('--attention', '--compile-mode', '--sample-compile-mode'):
        with pytest.raises(UserError, match=flag): parsers['dit-bench'].parse_args([flag, 'foo'])


# hostile files, one loader at a time
from dit_edu.sample import load_model, main as sample_main, DEFAULT_CKPT
from dit_edu.video_train import SHIPPED_VIDEO


def _with(src, d, name, sd=None, **meta):
    "A copy of the safetensors `src` with its tensors `sd` and metadata keys replaced."
    with safe_open(str(src), framework='pt') as f: m = dict(f.metadata() or {})
    m.update(meta)
    save_file(sd if sd is not None else load_file(str(src)), str(d / name), metadata=m)
    return d / name


@pytest.fixture(scope='module')
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp('hostile')
    img, vid = load_file(str(DEFAULT_CKPT)), load_file(str(SHIPPED_VIDEO))
    with safe_open(str(DEFAULT_CKPT), framework='pt') as f: cfg = json.loads(f.metadata()['config'])
    nan = dict(vid); k = 'final_layer.linear.weight'; nan[k] = nan[k].clone(); nan[k][0, 0] = float('inf')
    ints = {k: v.to(torch.int32) for k, v in img.items()}
    files = dict(
        config_list=(_with(DEFAULT_CKPT, d, 'list.safetensors', config='[1, 2]'), 'a list, not a dict'),
        config_str=(_with(DEFAULT_CKPT, d, 'str.safetensors', config='"DiT"'), 'a str, not a dict'),
        config_key=(_with(DEFAULT_CKPT, d, 'key.safetensors', config=json.dumps(cfg | {'evil': 1})), "unknown key 'evil'"),
        config_huge=(_with(DEFAULT_CKPT, d, 'huge.safetensors', config=json.dumps(cfg | {'hidden_size': 65536})), 'hidden_size=65536'),
        config_lies=(_with(DEFAULT_CKPT, d, 'lies.safetensors', config=json.dumps(cfg | {'depth': 8})), 'does not match its weights'),
        video_nan=(_with(SHIPPED_VIDEO, d, 'vnan.safetensors', nan), 'NaN or inf'),
        int_weights=(_with(DEFAULT_CKPT, d, 'int.safetensors', ints), 'not floating point'),
    )
    torch.save({'ema': [1, 2], 'model': {}, 'step': 1}, d / 'ema_list.pt'); files['ema_list'] = (d / 'ema_list.pt', 'not a')
    return files


@pytest.mark.parametrize('case', ['config_list', 'config_str', 'config_key', 'config_huge', 'config_lies', 'video_nan',
                                  'int_weights', 'ema_list'])
def test_model_files_are_checked_before_anything_is_built(hostile, case, capsys):
    path, why = hostile[case]
    with mock.patch('dit_edu.model.DiT.__init__', side_effect=AssertionError('built')) if case.startswith('config') \
            else mock.patch.dict({}):
        with pytest.raises(ValueError, match=why): load_model(path)
    with pytest.raises(SystemExit) as e: sample_main(['--ckpt', str(path), '--num-sampling-steps', '2'])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and '--ckpt' in err and why in err, err


def test_training_checkpoint_fields(tmp_path):
    from dit_edu.runs import read_checkpoint, CKPT_KEYS
    base = {k: {} for k in CKPT_KEYS} | dict(step=1, args='{}', config=None)
    for bad, why in [(dict(step=-5), 'step -5'), (dict(step='abc'), "step 'abc'"), (dict(ema=[1]), 'not a dict of tensors'),
                     (dict(args='[1]'), 'args are a list'), (dict(config=[1]), 'a list, not a dict')]:
        torch.save(base | bad, tmp_path / 'c.pt')
        with pytest.raises(ValueError, match=why): read_checkpoint(tmp_path / 'c.pt')


def test_latents_meta_and_labels(tmp_path):
    from dit_edu.data import LatentDataset
    np.save(tmp_path / 'latents.npy', np.zeros((3, 2, 4, 2, 2), np.float16))
    np.save(tmp_path / 'labels.npy', np.array([0, 9, 10]))
    for meta, why in [([1], 'not what dit-extract writes'), (dict(n='3', shape=[4, 2, 2], num_classes=10), 'not what'),
                      (dict(n=3, shape=[4, 2, 2], num_classes=10), r'integers in \[0, 10\)')]:
        (tmp_path / 'meta.json').write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=why): LatentDataset(tmp_path)


def test_vae_names_are_refused_at_once(monkeypatch):
    pytest.importorskip('diffusers')
    from dit_edu.data import load_vae
    t = time.perf_counter()
    with pytest.raises(FileNotFoundError, match='not a local AutoencoderKL folder'): load_vae('nosuchvae')
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(OSError, match='HF_HUB_OFFLINE'): load_vae('nobody/no-such-vae')
    assert time.perf_counter() - t < 10                                  # no network retries
    # no HF_HUB_OFFLINE, and a hub that cannot be reached (a machine without network): refused at once too
    monkeypatch.delenv('HF_HUB_OFFLINE')
    for k in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy'): monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('HF_ENDPOINT', 'https://127.0.0.1:9')
    t = time.perf_counter()
    with pytest.raises(OSError, match='cannot be reached'): load_vae('nobody/no-such-vae')
    assert time.perf_counter() - t < 10


def test_an_unreachable_hub_vae_is_one_line_through_the_command(tmp_path):
    "dit-extract --vae OWNER/NAME (not cached) where the hub cannot be reached: exit 2, one line, no folder written."
    import subprocess, shutil
    from conftest import child_env
    from dit_edu.data import find_fashion_mnist
    files = find_fashion_mnist()
    if not files: pytest.skip('Fashion-MNIST is not installed')
    env = {k: v for k, v in child_env().items() if k not in ('HF_HUB_OFFLINE', 'HTTPS_PROXY', 'https_proxy', 'ALL_PROXY',
                                                               'all_proxy')} | dict(HF_ENDPOINT='https://127.0.0.1:9')
    r = subprocess.run([shutil.which('dit-extract'), '--vae', 'nobody/no-such-vae', '--data-path', str(files[0].parent),
                        '--out', str(tmp_path / 'lat')], env=env, capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and 'cannot be reached' in lines[0], r.stderr[-2000:]
    assert not (tmp_path / 'lat').exists()


def test_eval_inputs(tmp_path):
    from dit_edu.evaluate import load_input
    (tmp_path / 'zero.npz').write_bytes(b'')
    np.savez(tmp_path / 'ok.npz', arr_0=np.zeros((4, 8, 8, 1), np.uint8))
    (tmp_path / 'cut.npz').write_bytes((tmp_path / 'ok.npz').read_bytes()[:100])
    np.savez(tmp_path / 'nan.npz', mu=np.array([np.nan, 1.]), sigma=np.eye(2))
    np.savez(tmp_path / 'str.npz', mu=np.array(['a', 'b']), sigma=np.eye(2))
    for name, why in [('zero', 'not a readable .npz'), ('cut', 'not a readable .npz'), ('nan', 'NaN or inf'), ('str', 'finite floating')]:
        with pytest.raises(ValueError, match=why): load_input(tmp_path / f'{name}.npz')


def test_stale_world_size_is_refused(monkeypatch):
    from dit_edu.cli import setup_distributed
    monkeypatch.setenv('WORLD_SIZE', '2')
    for k in ('RANK', 'MASTER_ADDR', 'MASTER_PORT'): monkeypatch.delenv(k, raising=False)
    with pytest.raises(UserError, match='WORLD_SIZE=2'): setup_distributed('cpu')


@pytest.mark.parametrize('argv, says', [
    (['--item-size', '20'], '--item-size: not for an image model'),
    (['--vae', 'ema'], '--vae: the model (shipped) works on pixels'),
    (['--shipped', 'video', '--vae', 'ema'], '--vae are for image DiTs, not --shipped video'),
    (['--shipped', 'video', '--model', 'DiT-Nano/4', '--image-size', '32'], 'are for image DiTs, not --shipped video')])
def test_flags_for_the_other_kind_of_model_are_refused(argv, says, tmp_path, capsys):
    "dit-sample: a flag that does not apply to the model it loads is refused in one line (exit 2), not ignored."
    from dit_edu.sample import main as sample_main
    out = tmp_path / ('x.gif' if 'video' in argv else 'x.png')
    with pytest.raises(SystemExit) as e: sample_main(argv + ['--out', str(out), '--num-sampling-steps', '2'])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and says in err, err
    assert not out.exists()
