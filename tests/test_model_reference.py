"""dit_edu.model against the reference DiT's numbers (tests/fixtures/dit_golden.pt), and the loader of dit_edu.checkpoints."""
import pytest, torch
from safetensors.torch import save_file
from dit_edu.model import DiT, DiT_models, PAPER_MODELS, count_params, model_gflops
from dit_edu.checkpoints import load_checkpoint
from dit_edu.patchify import get_2d_sincos_pos_embed
from dit_edu.embeddings import timestep_embedding


def test_pos_embed(golden):
    for key, ref in golden['pos_embed'].items():
        dim, grid = (int(s) for s in key.replace('dim', '').split('_grid'))
        ours = torch.from_numpy(get_2d_sincos_pos_embed(dim, grid))
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours.to(ref.dtype), ref, atol=1e-6, rtol=0)


EPS = torch.finfo(torch.float32).eps      # 1.19e-7


def embedding_tolerance(t, dim, max_period=10000):
    """Per-entry float32 error bound of [cos(t f) | sin(t f)]: the argument a = t * f carries about 1.5 eps |a|
    (f = exp(.) within 1 ulp on any MKL code path, the product rounded once), sin/cos add about 1 eps, and the
    golden file's own value as much again: 2 eps (|a| + 1). At t = 999 that is 2.4e-4 (the MKL paths differ by
    up to 6e-5 there); at t <= 10 it is below 3e-6."""
    half = dim // 2
    f = torch.exp(-torch.log(torch.tensor(float(max_period), dtype=torch.float64)) * torch.arange(half, dtype=torch.float64) / half)
    a = (t.double()[:, None] * f[None]).abs()                               # (N, dim/2)
    tol = 2 * EPS * (torch.cat([a, a], -1) + 1)
    return torch.cat([tol, torch.full_like(tol[:, :1], 2 * EPS)], -1) if dim % 2 else tol


def test_timestep_embedding(golden):
    g = golden['timestep_embedding']
    for dim in (256, 7):
        ours, ref = timestep_embedding(g['t'], dim).double(), g[f'dim{dim}'].double()
        err, tol = (ours - ref).abs(), embedding_tolerance(g['t'], dim)
        assert (err <= tol).all(), f"dim {dim}: worst error/bound {(err / tol).max():.2f} at {divmod(int((err / tol).argmax()), dim)}"


@pytest.mark.parametrize('name', [f'DiT-{s}/{p}' for s in ('S', 'B', 'L', 'XL') for p in (2, 4, 8)])
def test_param_counts(golden, name):
    counts = golden['param_counts_256px']
    with torch.device('meta'):
        m = DiT_models[name](input_size=32, num_classes=1000)
    assert count_params(m) == counts[name]
    assert count_params(m, trainable_only=True) == counts[name + ':trainable']


def test_twelve_paper_models():
    assert sorted(PAPER_MODELS) == sorted(f'DiT-{s}/{p}' for s in ('S', 'B', 'L', 'XL') for p in (2, 4, 8))


def test_xl2_gflops():
    assert abs(model_gflops('DiT-XL/2') - 118.6) < 0.1


# DiT outputs are O(1) sums of at most 4 D = 256 float32 products through a few layers: pairwise-summed, their rounding
# stays near sqrt(256) * eps * |out| ~ 2e-6, and a perturbed t-embedding (above) moves them by less still
# (its MLP and adaLN weights are 0.02-scale), so 1e-5 is a tight bound for both models.
@pytest.mark.parametrize('key', ['model_tiny_sigma', 'model_small_nosigma'])
def test_outputs_match_reference(golden, key):
    g = golden[key]
    m = DiT(**g['config']).eval()
    m.load_state_dict(g['state_dict'], strict=True)
    assert set(m.state_dict()) == set(g['state_dict'])
    with torch.no_grad():
        torch.testing.assert_close(m(g['x'], g['t'], g['y']), g['out'], atol=1e-5, rtol=0)
        if 'cfg' in g:
            c = g['cfg']
            torch.testing.assert_close(m.forward_with_cfg(c['x'], c['t'], c['y'], c['scale']), c['out'], atol=1e-5, rtol=0)


def test_released_checkpoint_layout():
    """The released DiT-XL-2-256x256.pt keys and shapes: built from the reference's layout rules."""
    with torch.device('meta'):
        m = DiT_models['DiT-XL/2'](input_size=32, num_classes=1000)
    sd = m.state_dict()
    assert sd['x_embedder.proj.weight'].shape == (1152, 4, 2, 2)
    assert sd['y_embedder.embedding_table.weight'].shape == (1001, 1152)
    assert sd['blocks.27.adaLN_modulation.1.weight'].shape == (6 * 1152, 1152)
    assert sd['blocks.0.attn.qkv.weight'].shape == (3 * 1152, 1152)
    assert sd['blocks.0.mlp.fc2.weight'].shape == (1152, 4608)
    assert sd['final_layer.linear.weight'].shape == (2 * 2 * 8, 1152)
    assert sd['pos_embed'].shape == (1, 256, 1152)
    assert len(sd) == 8 + 28 * 10 + 4  # embedders + pos_embed, 28 blocks of 10 tensors, final layer


def test_load_checkpoint_formats(golden, tmp_path):
    g = golden['model_tiny_sigma']
    sd = g['state_dict']
    # plain state dict
    torch.save(sd, tmp_path / 'plain.pt')
    # training checkpoint with DDP + compile prefixes; 'ema' must win over 'model'
    bad = {k: torch.zeros_like(v) for k, v in sd.items()}
    torch.save({'model': {f'module.{k}': v for k, v in bad.items()},
                'ema': {f'_orig_mod.{k}': v for k, v in sd.items()}, 'opt': {}, 'args': {}}, tmp_path / 'train.pt')
    import json
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / 'w.safetensors'),
              metadata={'config': json.dumps(g['config'])})
    for f in ('plain.pt', 'train.pt'):
        m = load_checkpoint(tmp_path / f, DiT(**g['config'])).eval()
        with torch.no_grad():
            torch.testing.assert_close(m(g['x'], g['t'], g['y']), g['out'], atol=1e-5, rtol=0)
    m = load_checkpoint(tmp_path / 'w.safetensors').eval()   # config from the file's metadata
    with torch.no_grad():
        torch.testing.assert_close(m(g['x'], g['t'], g['y']), g['out'], atol=1e-5, rtol=0)
    # without a config, everything but the number of heads is read from the shapes
    inferred = load_checkpoint(tmp_path / 'plain.pt')
    for k in ('input_size', 'patch_size', 'in_channels', 'num_classes', 'learn_sigma'):
        assert getattr(inferred, k) == g['config'][k], k
    assert len(inferred.blocks) == g['config']['depth']


def test_load_checkpoint_mismatch_names_everything(golden, tmp_path):
    torch.save(golden['model_tiny_sigma']['state_dict'], tmp_path / 'c.pt')
    other = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=3, num_heads=4, num_classes=10, learn_sigma=False)
    with pytest.raises(ValueError) as e:
        load_checkpoint(tmp_path / 'c.pt', other)
    msg = str(e.value)
    assert 'missing keys: blocks.2.' in msg
    assert 'final_layer.linear.weight: checkpoint (32, 64) vs model (16, 64)' in msg
    assert 'depth=2' in msg and 'learn_sigma=True' in msg


def test_load_checkpoint_refuses_code_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ('pwned',))
    torch.save({'model': Evil()}, tmp_path / 'evil.pt')
    with pytest.raises(ValueError, match='could not read checkpoint'):
        load_checkpoint(tmp_path / 'evil.pt')
    (tmp_path / 'trunc.pt').write_bytes(b'PK\x03\x04garbage')
    with pytest.raises(ValueError, match='could not read checkpoint'):
        load_checkpoint(tmp_path / 'trunc.pt')
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / 'nope.pt')


@pytest.mark.parametrize('kwargs,msg', [
    (dict(input_size=9, patch_size=2), 'not divisible by patch size'),
    (dict(hidden_size=30, num_heads=4), 'not divisible by num_heads'),
    (dict(block='nope'), 'unknown block design'),
])
def test_bad_config(kwargs, msg):
    base = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=1, num_heads=4, num_classes=10)
    with pytest.raises(ValueError, match=msg):
        DiT(**{**base, **kwargs})


def test_bad_inputs():
    m = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=1, num_heads=4, num_classes=10, class_dropout_prob=0.0).eval()
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 9])
    with pytest.raises(ValueError, match=r'x must have shape \(N, 4, 8, 8\)'):
        m(torch.randn(2, 4, 16, 16), t, y)
    with pytest.raises(ValueError, match='t must have shape'):
        m(x, torch.tensor(5), y)
    with pytest.raises(ValueError, match='no null class'):
        m(x, t, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match='integer tensor'):
        m(x, t, torch.tensor([0.0, 1.0]))


def test_readme_is_the_index_notebook():
    import subprocess, sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    assert subprocess.run([sys.executable, str(root / 'tools' / 'readme.py'), '--check']).returncode == 0, \
        'README.md is out of date: run python tools/readme.py'
