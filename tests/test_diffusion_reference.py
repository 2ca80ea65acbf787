"""Agreement of dit_edu's diffusion with the reference numbers in tests/fixtures/dit_golden.pt
(facebookresearch/DiT's diffusion package, float32 on a CPU).

Tolerances follow from float32 error analysis, not from one machine. Schedules are float64: relative 1e-5 is loose
there. A float32 term is within RTOL |ref| + ATOL * amp(t) of the reference: RTOL = 1e-5 and ATOL = 1e-6 are about
8 eps for O(1) values; amp(t) = 1/sqrt(alpha_bar_t) (1 at t = 0, 156 at t = 999) is how much
x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) magnifies an error of the model's output (its t-embedding
differs by up to 6e-5 between MKL code paths, see test_model_reference). Every term that passes through pred_xstart
gets amp(t); x_t itself, a well-conditioned sum, gets amp = 1."""
from pathlib import Path
import numpy as np
import pytest
import torch
from dit_edu.diffusion import create_diffusion

GOLDEN = Path(__file__).parent / "fixtures" / "dit_golden.pt"
RTOL, ATOL = 1e-5, 1e-6          # relative, plus an absolute floor for entries that are (nearly) zero


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


@pytest.fixture(scope="module")
def tiny_model(golden):
    from dit_edu.model import DiT
    g = golden["model_tiny_sigma"]
    model = DiT(**g["config"])
    model.load_state_dict(g["state_dict"])
    return model.eval()


def close(actual, expected, rtol=RTOL, atol=ATOL, amp=None):
    "`actual` within rtol |expected| + atol * amp of `expected`; amp (N,) scales the rows of a batch."
    actual = torch.as_tensor(np.asarray(actual) if not torch.is_tensor(actual) else actual).to(expected.dtype)
    if amp is None: return torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
    amp = torch.as_tensor(amp, dtype=torch.float64).reshape(-1, *[1] * (expected.ndim - 1))
    err, tol = (actual - expected).abs().double(), rtol * expected.abs().double() + atol * amp
    assert actual.shape == expected.shape and (err <= tol).all(), f"worst error/bound {(err / tol).max():.2f}"


def amplification(d, t):
    "1/sqrt(alpha_bar_t) of diffusion `d` at timesteps t (N,): the error gain of pred_xstart."
    return torch.as_tensor(d.sqrt_recip_alphas_cumprod)[t]


def test_linear_schedule(golden):
    d = create_diffusion("")
    for key, ref in golden["diffusion_linear_1000"].items():
        close(getattr(d, key), ref, atol=0)           # float64 arrays: relative only


def test_cosine_betas(golden):
    close(create_diffusion("", noise_schedule="squaredcos_cap_v2").betas, golden["betas_cosine_1000"], atol=0)
    close(create_diffusion("", noise_schedule="cosine").betas, golden["betas_cosine_1000"], atol=0)


@pytest.mark.parametrize("respacing", ["250", "50", "ddim25"])
def test_respacing(golden, respacing):
    ref = golden[f"respaced_{respacing}"]
    d = create_diffusion(respacing)
    assert d.timestep_map.tolist() == ref["timestep_map"].tolist()
    close(d.betas, ref["betas"], atol=0)


def test_diffusion_terms(golden, tiny_model):
    g, d = golden["diffusion_terms"], create_diffusion("")
    kw = dict(y=g["y"])
    close(d.q_sample(g["x0"], g["t"], noise=g["noise"]), g["xt"])
    with torch.no_grad():
        terms = d.training_losses(tiny_model, g["x0"], g["t"], model_kwargs=kw, noise=g["noise"])
        out = d.p_mean_variance(tiny_model, g["xt"], g["t"], clip_denoised=False, model_kwargs=kw)
        clipped = d.p_mean_variance(tiny_model, g["xt"], g["t"], clip_denoised=True, model_kwargs=kw)
        ddim = d.ddim_sample(tiny_model, g["xt"], g["t"], clip_denoised=False, model_kwargs=kw, eta=0.0)
    amp = amplification(d, g["t"])
    for k in ("loss", "mse", "vb"): close(terms[k], g[k], amp=amp)
    close(out["mean"], g["p_mean"], amp=amp); close(out["variance"], g["p_variance"], amp=amp)
    close(out["log_variance"], g["p_log_variance"], amp=amp); close(out["pred_xstart"], g["pred_xstart"], amp=amp)
    close(clipped["mean"], g["p_mean_clipped"], amp=amp); close(clipped["pred_xstart"], g["pred_xstart_clipped"], amp=amp)
    close(ddim["sample"], g["ddim_eta0"], amp=amp)


def test_respaced_250_terms(golden, tiny_model):
    g, base = golden["respaced_250_terms"], golden["diffusion_terms"]
    d, kw = create_diffusion("250"), dict(y=base["y"])
    close(d.q_sample(base["x0"], g["t"], noise=base["noise"]), g["xt"])
    with torch.no_grad():
        terms = d.training_losses(tiny_model, base["x0"], g["t"], model_kwargs=kw, noise=base["noise"])
        out = d.p_mean_variance(tiny_model, g["xt"], g["t"], clip_denoised=False, model_kwargs=kw)
    amp = amplification(d, g["t"])
    for k in ("loss", "mse", "vb"): close(terms[k], g[k], amp=amp)
    close(out["mean"], g["p_mean"], amp=amp); close(out["log_variance"], g["p_log_variance"], amp=amp)
    close(out["pred_xstart"], g["pred_xstart"], amp=amp)


def test_reference_sample_py_call_site(tiny_model):
    "sample.py's call: doubled noise and labels, model.forward_with_cfg as the model, y and cfg_scale as model_kwargs."
    d = create_diffusion("ddim25")
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    z = torch.cat([z, z], 0)
    kw = dict(y=torch.tensor([1, 2, 10, 10]), cfg_scale=4.0)
    a = d.p_sample_loop(tiny_model.forward_with_cfg, z.shape, z, clip_denoised=False, model_kwargs=kw, progress=False)
    b = d.ddim_sample_loop(tiny_model.forward_with_cfg, z.shape, z, clip_denoised=False, model_kwargs=kw)
    assert a.shape == b.shape == z.shape and torch.isfinite(a).all() and torch.isfinite(b).all()
    # the two halves share their guided channels but not the rest (conditional vs unconditional), so they drift apart
    assert not torch.allclose(b[:2], b[2:])


def test_guidance_wrapper_matches_reference_cfg(golden, tiny_model):
    "ClassifierFreeGuidance on the conditional half equals the reference forward_with_cfg's first half (3 guided channels)."
    from dit_edu.sampling import ClassifierFreeGuidance
    g = golden["model_tiny_sigma"]["cfg"]
    n = len(g["x"]) // 2
    assert (g["y"][n:] == tiny_model.num_classes).all()            # the golden second half is the null class
    with torch.no_grad():
        out = ClassifierFreeGuidance(tiny_model, float(g["scale"]))(g["x"][:n], g["t"][:n], g["y"][:n])
    close(out, g["out"][:n])


@pytest.mark.parametrize("bad, match", [
    (lambda: create_diffusion("fast"), "'fast'"),
    (lambda: create_diffusion("2000"), "2000"),
    (lambda: create_diffusion("ddim600"), "'ddim600'"),
    (lambda: create_diffusion("250", noise_schedule="sigmoid"), "'sigmoid'"),
    (lambda: create_diffusion("").q_sample(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1000])), "1000"),
    (lambda: create_diffusion("").q_sample(torch.zeros(2, 1, 4, 4), torch.tensor([0, -1])), "-1"),
    (lambda: create_diffusion("").q_sample(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1, 2])), "batch size 2"),
    (lambda: create_diffusion("").q_sample(torch.zeros(2, 1, 4, 4), 3, noise=torch.zeros(2, 1, 4)), "noise shape"),
    (lambda: create_diffusion("").training_losses(lambda x, t: torch.zeros_like(x), torch.zeros(2, 1, 4, 4), torch.tensor([0, 1])),
     r"\(2, 2, 4, 4\)"),
])
def test_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_progress_bar_and_generators(tiny_model, capsys):
    "progress=True shows a tqdm bar and changes nothing; the progressive generators yield one Step per model call."
    from dit_edu.sampling import Sampler
    d, z, kw = create_diffusion("ddim10"), torch.randn(2, 4, 8, 8), dict(y=torch.tensor([1, 2]))
    quiet = d.ddim_sample_loop(tiny_model, z.shape, z, model_kwargs=kw)
    loud = d.ddim_sample_loop(tiny_model, z.shape, z, model_kwargs=kw, progress=True)
    assert torch.equal(quiet, loud) and "10/10" in capsys.readouterr().err
    steps = list(Sampler(create_diffusion(""), "dpm++2m", steps=8).progressive(tiny_model, z.shape, z, model_kwargs=kw))
    assert len(steps) == 8 and steps[0].t == 999 and steps[-1].t == 0
    assert all(s.x_t.shape == s.pred_xstart.shape == s.sample.shape == z.shape for s in steps)
