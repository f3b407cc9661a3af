"""Views against scikit-image references on real photographs (method.md §1)."""
import numpy as np
import pytest
import torch
from skimage import color, feature, filters

from tmkd_core import priors
from tmkd_core.config import ViewConfig
from tmkd_core.priors import make_views


def _gray(photos):
    return np.stack([color.rgb2gray(p.permute(1, 2, 0).numpy()) for p in photos])


def _max_scaled(a):
    return a / a.reshape(len(a), -1).max(1).reshape(-1, 1, 1)


def test_luminance_matches_rgb2gray(photos):
    np.testing.assert_allclose(priors.luminance(photos)[:, 0].numpy(), _gray(photos), atol=1e-5)


@pytest.mark.parametrize("operator,reference", [
    ("sobel", filters.sobel), ("scharr", filters.scharr), ("laplacian", lambda g: np.abs(filters.laplace(g))),
])
def test_edge_operators_match_skimage(photos, operator, reference):
    # Tolerance 1e-4 on [0, 1] maps: float32 vs float64 rounding only; borders included.
    ours = priors.edge_map(photos, operator)
    expected = _max_scaled(np.stack([reference(g) for g in _gray(photos)]))
    assert ours.shape == photos.shape
    for c in range(3):  # repeated to every channel
        np.testing.assert_allclose(ours[:, c].numpy(), expected, atol=1e-4)


def test_canny_is_skimage_canny(photos):
    ours = priors.edge_map(photos, "canny")[:, 0].numpy()
    expected = np.stack([feature.canny(g, sigma=1.0) for g in _gray(photos)]).astype(np.float32)
    np.testing.assert_array_equal(ours, expected)


def _min_max_image(a):
    return (a - a.min()) / (a.max() - a.min())


def test_fft_highpass_matches_butterworth(photos):
    # An order-20 Butterworth high-pass approximates the ideal disc; they differ only in
    # the few bins near the cut-off, so the mean absolute difference on [0, 1] maps is
    # below 0.01 and the maps correlate above 0.99.
    r = 0.25
    ours = priors.hf_map(photos, "fft", radius=r).numpy()
    ref = np.stack([
        _min_max_image(filters.butterworth(p.permute(1, 2, 0).numpy().astype(np.float64), cutoff_frequency_ratio=r * 0.5,
                                           high_pass=True, order=20, channel_axis=-1).transpose(2, 0, 1))
        for p in photos])
    assert np.abs(ours - ref).mean() < 0.01
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.99


def test_gaussian_highpass_matches_difference_of_gaussian(photos):
    sigma = 1.5
    ours = priors.hf_map(photos, "gaussian", sigma=sigma).numpy()
    ref = []
    for p in photos:
        img = p.permute(1, 2, 0).numpy().astype(np.float64)
        resid = img - filters.gaussian(img, sigma=sigma, mode="reflect", truncate=4.0, channel_axis=-1,
                                       preserve_range=True)
        ref.append(_min_max_image(resid.transpose(2, 0, 1)))
    np.testing.assert_allclose(ours, np.stack(ref), atol=1e-4)


def test_fft_highpass_removes_low_frequencies(photos):
    out = priors.fft_highpass(photos, radius=0.3)
    spec = torch.fft.fft2(out).abs()
    low = priors.frequency_radius(96, 96) < 0.15
    assert spec[..., low].max() < 1e-3 * spec.max()
    assert out.mean(dim=(-2, -1)).abs().max() < 1e-5  # the DC component is gone


@pytest.mark.parametrize("name", ["rgb", "edge", "hf"])
@pytest.mark.parametrize("mode", ["map", "enhance"])
def test_views_keep_shape_and_range(photos, name, mode):
    cfg = ViewConfig(edge_mode=mode, hf_mode=mode)
    v = priors.view(photos, name, cfg)
    assert v.shape == photos.shape and v.min() >= 0 and v.max() <= 1 + 1e-6


def test_enhance_adds_the_scaled_prior(photos):
    cfg = ViewConfig(edge_mode="enhance", enhance_lambda=0.3)
    expected = (photos + 0.3 * priors.edge_map(photos, "sobel")).clamp(0, 1)
    torch.testing.assert_close(priors.view(photos, "edge", cfg), expected)


def test_make_views_stacks_in_order_and_handles_grayscale(photos):
    cfg = ViewConfig()
    v = priors.make_views(photos, cfg)
    assert v.shape == (3, *photos.shape)
    torch.testing.assert_close(v[0], photos)
    gray = photos[:, :1]
    assert priors.make_views(gray, cfg).shape == (3, *gray.shape)


def test_unknown_operator_lists_the_valid_ones(photos):
    with pytest.raises(KeyError, match="sobel"):
        priors.edge_map(photos, "prewitt")
    with pytest.raises(ValueError, match="canny"):
        ViewConfig(edge_operator="prewitt")


def test_detail_views_sharpen_without_shifting_brightness(photos):
    from tmkd_core.priors import edge_residual, hf_residual

    x = photos[:, :, :32, :32]
    for residual in (edge_residual(x), hf_residual(x)):
        assert residual.mean(dim=(1, 2, 3)).abs().max() < 1e-4  # zero mean per image (and channel for hf)
    cfg = ViewConfig(edge_mode="detail", hf_mode="detail")
    v = make_views(x, cfg)
    assert v.min() >= 0 and v.max() <= 1
    for k in (1, 2):  # a brightness shift of at most 0.02 (clipping) where `enhance` adds 0.1-0.2
        assert (v[k].mean() - x.mean()).abs() < 0.02
    enhanced = make_views(x, ViewConfig(edge_mode="enhance", hf_mode="enhance"))
    assert (enhanced[2].mean() - x.mean()) > 0.05
    torch.testing.assert_close(make_views(x, ViewConfig(edge_mode="detail", hf_mode="detail", detail_lambda=0.0)),
                               x.expand(3, *x.shape))


def test_reference_agreement_rows_and_what_they_catch(photos, monkeypatch):
    from tmkd_core import analysis

    table = analysis.reference_agreement(photos).set_index("view")
    assert [name.split()[0] for name in table.index] == ["sobel", "scharr", "laplacian", "fft", "gaussian"]
    exact = table.drop(index="fft r=0.25 vs butterworth (order 20)")
    assert (exact["max abs diff"] < 1e-4).all()  # float rounding, as in the tests above
    assert table.loc["fft r=0.25 vs butterworth (order 20)", "mean abs diff"] < 0.01  # the disc vs order 20
    # a wrong operator or filter shows in its row (notebook 01 stops on the edge rows)
    monkeypatch.setattr(analysis, "edge_map", lambda x, op: priors.edge_map(x, "scharr" if op == "sobel" else op))
    monkeypatch.setattr(analysis, "hf_map", lambda x, f, **kw: priors.hf_map(x, f, **{**kw, "sigma": 1.5}))
    wrong = analysis.reference_agreement(photos).set_index("view")["max abs diff"]
    assert wrong["sobel vs skimage.filters.sobel"] > 1e-2
    assert wrong["gaussian s=1 vs x - skimage.filters.gaussian"] > 1e-2
    assert wrong["scharr vs skimage.filters.scharr"] < 1e-4


def test_view_shift_by_hand():
    from tmkd_core.analysis import view_shift

    x = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 2, 2)  # mean 0.4375; two pixels at 0 or 1
    dimmer = view_shift(x, 0.5 * x + 0.25)  # mean 0.46875, nothing clipped, a linear map of x
    assert dimmer == pytest.approx({"brightness shift": 0.03125, "pixels clipped (%)": 0.0,
                                    "correlation with RGB": 1.0})
    inverted = view_shift(x, 1 - x)  # mean 0.5625
    assert inverted == pytest.approx({"brightness shift": 0.125, "pixels clipped (%)": 50.0,
                                      "correlation with RGB": -1.0})


def test_view_mode_statistics_are_each_mode_and_views_shift(photos):
    from tmkd_core.analysis import view_mode_statistics, view_shift

    x = photos[:, :, :32, :32]
    rows = view_mode_statistics(x)
    assert [(r["view"], r["mode"]) for r in rows] == [("edge", "enhance"), ("hf", "enhance"), ("edge", "detail"),
                                                       ("hf", "detail")]
    for r in rows:
        cfg = ViewConfig(edge_mode=r["mode"], hf_mode=r["mode"])
        assert r == {"view": r["view"], "mode": r["mode"], **view_shift(x, priors.view(x, r["view"], cfg))}
    shift = {(r["view"], r["mode"]): r["brightness shift"] for r in rows}
    assert shift["hf", "enhance"] > 0.05 and abs(shift["hf", "detail"]) < 0.02  # as docs/method.md §1 says
