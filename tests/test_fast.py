"""The fast path (dit_edu.fast) against the reference's numbers and the plain path: loss, step, EMA, sampler, compiled."""
import copy
import pytest, torch
from dit_edu.model import DiT
from dit_edu.diffusion import create_diffusion
from dit_edu.fast import make_loss, set_memory_switches, GuidedSampler, make_optimizer
from dit_edu.train import make_train_step
from dit_edu.training import update_ema


def golden_model(golden):
    g = golden['model_tiny_sigma']
    m = DiT(**g['config']); m.load_state_dict(g['state_dict']); return m.eval()


@pytest.mark.parametrize('respacing,key', [('', 'diffusion_terms'), ('250', 'respaced_250_terms')])
def test_fast_loss_equals_reference_numbers(golden, respacing, key):
    """make_loss (fp32, eager) gives the mean of the reference's per-sample loss (full and 250-step processes)."""
    model, d, g = golden_model(golden), create_diffusion(respacing), golden[key]
    base = golden['diffusion_terms']
    x0, noise, y = base['x0'], base['noise'], base['y']
    out = make_loss(model, d, 'fp32', compile=False)(x0, y, g['t'], noise)
    torch.testing.assert_close(out, g['loss'].mean(), rtol=1e-5, atol=1e-5)
    ref = d.training_losses(model, x0, g['t'], model_kwargs=dict(y=y), noise=noise)['loss']
    assert torch.equal(out, ref.mean())                 # one loss: the fast path runs training_losses itself


def test_fast_loss_and_sampler_step_have_no_graph_break():
    """Nothing in the loss or the guided step reads a value back to the host: dynamo traces each as one graph."""
    torch._dynamo.reset()
    m = tiny(depth=1, hidden=32).train()
    x, y, t, noise = batches(1)[0]
    d = create_diffusion('')
    explained = torch._dynamo.explain(lambda: d.training_losses(m, x, t, dict(y=y), noise)['loss'].mean())()
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    s = GuidedSampler(m.eval(), create_diffusion('10'), 4.0, 'fp32', compile=False)
    explained = torch._dynamo.explain(s.step)(x, torch.full((4,), 5), y, noise)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def tiny(depth=2, hidden=64):
    torch.manual_seed(0)
    m = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=hidden, depth=depth, num_heads=4, num_classes=10)
    with torch.no_grad():
        for p in m.parameters(): p.normal_(0, 0.05)
    m.y_embedder.dropout_prob = 0.0
    return m


def batches(n=3):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 4, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g),
             torch.randint(0, 1000, (4,), generator=g), torch.randn(4, 4, 8, 8, generator=g)) for _ in range(n)]


def fast_step(model, diffusion, opt, ema, ema_decay, precision='bf16', compile=False, **switches):
    "The step dit-train takes on CUDA: the trainer's step around the fast loss."
    set_memory_switches(model, **switches)
    return make_train_step(model, diffusion, opt, ema, ema_decay, loss_fn=make_loss(model, diffusion, precision, compile))


def run(model, maker, data):
    m, d = copy.deepcopy(model).train(), create_diffusion('')
    e = copy.deepcopy(m)
    step = maker(m, d, torch.optim.AdamW(m.parameters(), lr=1e-3), e, 0.9)
    return torch.stack([torch.as_tensor(step(*b)) for b in data]), m, e


def flat(m): return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_fast_step_equals_plain_step_fp32():
    """Three fp32 eager steps: same losses, weights and EMA as the plain (reference) step."""
    model, data = tiny(), batches()
    fl, fm, fe = run(model, lambda *a: fast_step(*a, precision='fp32', compile=False), data)
    pl, pm, pe = run(model, make_train_step, data)
    torch.testing.assert_close(fl, pl, rtol=1e-6, atol=0)
    torch.testing.assert_close(flat(fm), flat(pm), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(flat(fe), flat(pe), rtol=1e-5, atol=1e-6)


def test_bf16_step_tracks_fp32():
    model, data = tiny(), batches()
    bl = run(model, lambda *a: fast_step(*a, precision='bf16', compile=False), data)[0]
    pl = run(model, make_train_step, data)[0]
    assert ((bl - pl).abs() / pl).max() < 2e-2


def test_bf16_residual_tracks_fp32_and_partial_checkpointing_is_exact():
    """fp32_residual=False stays within bf16 rounding of fp32; checkpointing the first block changes nothing in fp32."""
    model, data = tiny(), batches()
    pl = run(model, make_train_step, data)[0]
    rl, rm, _ = run(model, lambda *a: fast_step(*a, precision='bf16', compile=False, fp32_residual=False), data)
    assert not rm.fp32_residual and ((rl - pl).abs() / pl).max() < 2e-2
    fl, fm, _ = run(model, lambda *a: fast_step(*a, precision='fp32', compile=False), data)
    cl, cm, _ = run(model, lambda *a: fast_step(*a, precision='fp32', compile=False, checkpointing=1), data)
    assert cm.checkpointed_blocks() == 1
    torch.testing.assert_close(cl, fl, rtol=1e-6, atol=0)
    torch.testing.assert_close(flat(cm), flat(fm), rtol=1e-6, atol=1e-7)


def test_ema_update_matches_loop():
    """The trainer's one-pass lerp EMA equals the reference's per-tensor mul/add to float32 rounding."""
    ps = [torch.randn(3, 4), torch.randn(7)]
    a, b = [p + 1 for p in ps], [p + 1 for p in ps]
    update_ema(a, ps, 0.999)
    for e, p in zip(b, ps): e.mul_(0.999).add_(p, alpha=1 - 0.999)
    for x, y in zip(a, b): torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    assert not torch.equal(a[0], ps[0] + 1)


def test_make_optimizer_defaults():
    opt = make_optimizer(torch.nn.Linear(2, 2))
    assert opt.defaults['lr'] == 1e-4 and opt.defaults['weight_decay'] == 0.0 and not opt.defaults['fused']


def reference_samples(model, d, z, y, seed):
    torch.manual_seed(seed)
    return d.p_sample_loop(model.forward_with_cfg, (2 * len(z), *z.shape[1:]), torch.cat([z, z]), clip_denoised=False,
                           model_kwargs=dict(y=torch.cat([y, torch.full_like(y, 10)]), cfg_scale=4.0))[: len(z)]


def half_noise(i, x): return torch.randn(2 * x.shape[0], *x.shape[1:])[: x.shape[0]]


def test_guided_sampler_equals_reference_loop():
    model = tiny().eval()
    with torch.no_grad(): model.final_layer.linear.weight.mul_(0.05)
    d, z, y = create_diffusion('10'), torch.randn(3, 4, 8, 8), torch.tensor([1, 5, 9])
    ref = reference_samples(model, d, z, y, 7)
    torch.manual_seed(7)
    ours = GuidedSampler(model, d, 4.0, precision='fp32', compile=False)(z, y, noise_fn=half_noise)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='3 samples'):
        GuidedSampler(model, d, precision='fp32', compile=False)(z, y[:2])
    torch.manual_seed(7)
    w16 = GuidedSampler(model, d, 4.0, precision='bf16', compile=False, bf16_weights=True)(z, y, noise_fn=half_noise)
    assert ((w16 - ref).norm() / ref.norm()) < 5e-2
    assert next(model.parameters()).dtype == torch.float32


def test_compiled_step_and_sampler_on_cpu():
    """torch.compile of model + loss (and of the sampler step) on a depth-1 model: the same numbers as the plain path."""
    torch._dynamo.reset()
    model, data = tiny(depth=1, hidden=32), batches(2)
    cl = run(model, lambda *a: fast_step(*a, precision='fp32', compile=True), data)[0]
    pl = run(model, make_train_step, data)[0]
    torch.testing.assert_close(cl, pl, rtol=1e-5, atol=1e-6)
    m = model.eval()
    with torch.no_grad(): m.final_layer.linear.weight.mul_(0.05)
    d, z, y = create_diffusion('3'), torch.randn(2, 4, 8, 8), torch.tensor([2, 3])
    ref = reference_samples(m, d, z, y, 5)
    torch.manual_seed(5)
    ours = GuidedSampler(m, d, 4.0, precision='fp32', compile=True)(z, y, noise_fn=half_noise)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
