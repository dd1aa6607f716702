"""drift.html and the calibration report: renderers on hand-made inputs, and headless Chromium."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keras_batch_score.transforms.drift import html as dr
from keras_batch_score.transforms.drift import html_charts as charts
from keras_batch_score.transforms.postprocess import calibration as cal
from keras_batch_score.transforms.postprocess import calibration_metrics as cm
from keras_batch_score.transforms.postprocess import reliability
from tests import browser

XSS = "<script>alert(1)</script>"
THRESHOLDS = {
    "psi": 0.2,
    "js": 0.1,
    "wasserstein": 0.1,
    "linf": 0.1,
    "ks": None,
    "mean_shift": None,
    "std_shift": None,
    "alpha": 0.05,
}


def numeric_column(
    name: str,
    *,
    psi: float,
    p: float | None,
    edges: list[float] | None = None,
    reference: list[int] | None = None,
    current: list[int] | None = None,
) -> dict[str, Any]:
    """A numeric column report shaped like ``drift.column_report`` builds it."""
    edges = edges or [0.0, 1.0, 2.0, 4.0, 8.0]
    reference = reference or [0, 25, 25, 25, 25, 0]
    current = current or [3, 10, 20, 30, 30, 7]
    metrics = {
        "psi": psi,
        "js": psi / 4,
        "wasserstein": psi / 3,
        "ks": 0.1,
        "mean_shift": 0.2,
        "std_shift": 0.1,
        "p_value": p,
    }
    limits = {k: THRESHOLDS[k] for k in metrics if k != "p_value"} | {"alpha": 0.05}
    over = [
        k
        for k, v in metrics.items()
        if k != "p_value" and limits.get(k) is not None and v > limits[k]
    ]
    drifted_by = over if (p is not None and p < 0.05) else []
    return {
        "name": name,
        "kind": "numeric",
        "status": "ok",
        "drift_detected": bool(drifted_by),
        "drifted_by": drifted_by,
        "metrics": metrics,
        "thresholds": limits,
        "reference": {
            "count": 100,
            "null_count": 0,
            "mean": 3.0,
            "std": 2.0,
            "min": 0.0,
            "max": 8.0,
        },
        "current": {
            "count": 100,
            "null_count": 1,
            "mean": 3.5,
            "std": 2.5,
            "min": -1.0,
            "max": 9.5,
        },
        "histogram": {
            "reference": reference,
            "current": current,
            "edges": edges,
            "slots": "below, bins, above",
        },
    }


def categorical_column(name: str, *, psi: float, p: float, values: list[str]) -> dict[str, Any]:
    """A categorical column report."""
    metrics = {"psi": psi, "js": psi / 4, "linf": psi / 2, "p_value": p}
    limits = {"psi": 0.2, "js": 0.1, "linf": 0.1, "alpha": 0.05}
    over = [k for k, v in metrics.items() if k != "p_value" and v > limits[k]]
    drifted_by = over if p < 0.05 else []
    n = len(values) + 1
    return {
        "name": name,
        "kind": "categorical",
        "status": "ok",
        "drift_detected": bool(drifted_by),
        "drifted_by": drifted_by,
        "metrics": metrics,
        "thresholds": limits,
        "reference": {"count": 100, "null_count": 0},
        "current": {"count": 100, "null_count": 0},
        "histogram": {
            "reference": [50 // n + i for i in range(n)],
            "current": [50 // n + 2 * (n - i) for i in range(n)],
            "values": values,
            "slots": "values, other",
        },
    }


def make_report(features: list[dict], predictions: list[dict], *, share: float = 0.5) -> dict:
    """A ``drift.json`` document around hand-made column reports."""
    drifted = [f["name"] for f in features if f["drift_detected"]]
    frac = len(drifted) / len(features) if features else 0.0
    return {
        "format": "keras-batch-score/drift",
        "version": 1,
        "status": "ok",
        "message": f"{len(drifted)} of {len(features)} features drifted",
        "drift_detected": bool(features) and frac > share,
        "dataset": {
            "features": len(features),
            "drifted_features": drifted,
            "drifted_share": frac,
            "drift_share": share,
        },
        "prediction_drift_detected": any(p["drift_detected"] for p in predictions),
        "rows": {"reference": 1000, "current": 500},
        "reference_profile": "/data/profile.json",
        "psi_epsilon": 1e-4,
        "thresholds": {"default": dict(THRESHOLDS), "per_feature": {}, "drift_share": share},
        "created_at": "2026-11-28T00:00:00Z",
        "features": features,
        "predictions": predictions,
    }


def demo_report() -> dict:
    """Features drift as a dataset, predictions drift, one column over threshold but not significant."""
    features = [
        numeric_column("age", psi=0.05, p=0.6),
        numeric_column(
            "income", psi=4.9, p=0.0, edges=[0, 10, 20, 50, 200], current=[0, 5, 10, 20, 50, 15]
        ),
        numeric_column("tenure", psi=0.35, p=0.2),  # over threshold, not significant
        categorical_column(
            "colour",
            psi=0.9,
            p=1e-9,
            values=["red", "green", "blue", "a-very-long-category-name-here"],
        ),
        numeric_column("score", psi=0.01, p=None),
    ]
    predictions = [
        numeric_column("prediction[0]", psi=1.2, p=1e-6, edges=[0.0, 0.1, 0.2, 0.5, 1.0]),
        numeric_column("prediction[1]", psi=0.3, p=1e-3, edges=[0.0, 0.3, 0.6, 0.9, 1.0]),
    ]
    return make_report(features, predictions, share=0.3)


# --------------------------------------------------------------------------- HTML helpers


class Page(HTMLParser):
    """Every start tag with its attributes, in document order; checks that tags balance."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.stack: list[str] = []
        self.data: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>, open: {self.stack[-3:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.data.append(data)

    def with_class(self, cls: str, tag: str | None = None) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.elements
            if cls in a.get("class", "").split() and (tag is None or t == tag)
        ]

    def ids(self) -> list[str]:
        return [a["id"] for _, a in self.elements if "id" in a]


def banner_classes(page: Page) -> list[set[str]]:
    """The class sets of the page's banners, in order (the first one is the page verdict)."""
    return [set(a["class"].split()) for a in page.with_class("banner")]


# --------------------------------------------------------------------------- drift.html


def test_page_banner_is_red_when_features_drift():
    page = Page(dr.render_html(demo_report()))
    banners = banner_classes(page)
    assert "drift" in banners[0]  # dataset drift
    assert {"sub", "drift"} <= banners[1] and {"sub", "drift"} <= banners[
        2
    ]  # predictions, features


def test_page_banner_is_amber_when_only_predictions_drift():
    features = [numeric_column("a", psi=0.01, p=0.7), numeric_column("b", psi=0.02, p=0.4)]
    predictions = [numeric_column(f"prediction[{i}]", psi=2.0, p=1e-12) for i in range(3)]
    report = make_report(features, predictions)
    assert not report["drift_detected"] and report["prediction_drift_detected"]
    text = dr.render_html(report)
    page = Page(text)
    banners = banner_classes(page)
    assert "warn" in banners[0] and "ok" not in banners[0] and "drift" not in banners[0]
    assert "drift" in banners[1]  # the predictions banner
    assert "ok" in banners[2]  # the features banner
    assert "Prediction drift: 3 of 3 prediction columns drifted" in text


def test_page_banner_is_green_when_nothing_drifts_and_grey_without_data():
    report = make_report(
        [numeric_column("a", psi=0.01, p=0.7)], [numeric_column("prediction", psi=0.0, p=0.9)]
    )
    assert all("ok" in b for b in banner_classes(Page(dr.render_html(report))))
    report.update(status="no_data", message="no rows were scored")
    assert all("nodata" in b for b in banner_classes(Page(dr.render_html(report))))


def test_predictions_come_first_and_every_toc_anchor_resolves():
    report = demo_report()
    page = Page(dr.render_html(report))
    ids = page.ids()
    assert len(ids) == len(set(ids)), "duplicate element ids"
    assert ids.index("predictions") < ids.index("features")
    targets = [
        a["href"][1:] for t, a in page.elements if t == "a" and a.get("href", "").startswith("#")
    ]
    assert targets and set(targets) <= set(ids)
    toc = next(i for i, (t, a) in enumerate(page.elements) if a.get("id") == "toc")
    toc_links = []
    for t, a in page.elements[toc + 1 :]:
        if t == "h2":
            break
        if t == "a":
            toc_links.append(a["href"][1:])
    cards = [a["id"] for a in page.with_class("card")]
    n_columns = len(report["features"]) + len(report["predictions"])
    assert len(cards) == n_columns
    assert set(toc_links) == {*cards, "predictions", "features"}


def test_numeric_bins_are_drawn_at_their_true_widths():
    edges = [-3.0, -1.0, 0.0, 0.5, 4.0, 10.0]
    column = numeric_column(
        "x",
        psi=0.1,
        p=0.5,
        edges=edges,
        reference=[1, 20, 20, 20, 20, 20, 0],
        current=[5, 10, 30, 10, 20, 20, 5],
    )
    svg = charts.column_chart(column)
    page = Page(svg)
    for cls in ("ref", "cur"):
        rects = sorted(
            (r for r in page.with_class(cls, "rect") if "bin" in r["class"].split()),
            key=lambda r: int(r["data-slot"]),
        )
        assert len(rects) == len(edges) + 1  # below, 5 bins, above
        x = np.array([float(r["x"]) for r in rects])
        w = np.array([float(r["width"]) for r in rects])
        inner_w, inner_x = w[1:-1], x[1:-1]
        # widths proportional to the bin widths, bins adjacent, end bars narrow and outside
        np.testing.assert_allclose(
            inner_w / inner_w.sum(), np.diff(edges) / (edges[-1] - edges[0]), rtol=1e-3
        )
        np.testing.assert_allclose(inner_x[1:], inner_x[:-1] + inner_w[:-1], atol=0.01)
        assert w[0] < inner_w.min() and w[-1] < inner_w.min()
        assert x[0] + w[0] < inner_x[0] and x[-1] > inner_x[-1] + inner_w[-1]
    # horizontal, nicely rounded ticks on the value scale; a y axis
    assert "rotate(-40" not in svg
    texts = "".join(page.data)
    for tick in ("-2", "0", "2", "4", "6", "8", "10", "&lt; min", "&gt; max"):
        assert f">{tick}</text>" in svg
    assert "share of rows" in texts and "0%" in texts


@pytest.mark.parametrize("edges", [[0.0, 0.0, 1.0, 1.0, 2.0], [5.0, 5.0]])
def test_repeated_quantile_edges_and_constant_columns_still_draw(edges):
    n = len(edges) + 1
    column = numeric_column("c", psi=0.0, p=0.9, edges=edges, reference=[1] * n, current=[2] * n)
    page = Page(charts.column_chart(column))
    rects = [r for r in page.with_class("ref", "rect") if "bin" in r["class"].split()]
    assert len(rects) == n
    for r in rects:
        assert all(np.isfinite(float(r[k])) for k in ("x", "y", "width", "height"))
        assert float(r["width"]) >= 1.99  # a zero-width bin stays visible


def test_nice_ticks_and_labels():
    assert charts.nice_ticks(0.0, 1.0) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert charts.tick_labels(charts.nice_ticks(0.0, 1.0)) == [
        "0",
        "0.2",
        "0.4",
        "0.6",
        "0.8",
        "1.0",
    ]
    assert charts.tick_labels(charts.nice_ticks(-3.0, 10.0)) == [
        "-2",
        "0",
        "2",
        "4",
        "6",
        "8",
        "10",
    ]
    assert charts.tick_labels(charts.nice_ticks(1000.0, 26000.0)) == [
        "5,000",
        "10,000",
        "15,000",
        "20,000",
        "25,000",
    ]


def test_categorical_columns_stay_category_bar_charts():
    column = categorical_column("c", psi=0.0, p=0.9, values=["x", "y"])
    page = Page(charts.column_chart(column))
    assert len(page.with_class("ref", "rect")) == 3 and "(other)" in "".join(page.data)


def test_over_threshold_but_not_significant_has_its_own_style():
    column = numeric_column("tenure", psi=0.35, p=0.2)  # psi > 0.2, but p >= alpha
    passing = numeric_column("age", psi=0.05, p=0.6)
    drifted = numeric_column("income", psi=0.9, p=0.001)
    assert not column["drift_detected"]
    text = dr.render_html(make_report([column, passing, drifted], []))
    page = Page(text)
    warn_cells = page.with_class("warn", "td")
    drift_cells = page.with_class("drift", "td")
    assert warn_cells and drift_cells  # amber for tenure, red for income
    assert {a["id"] for a in page.with_class("warn", "div") if "card" in a["class"]} == {
        "features-1"
    }
    assert "over threshold, not significant" in text  # legend and badge
    rows = {a["class"] for t, a in page.elements if t == "tr" and "class" in a}
    assert {"drift", "warn", "ok"} <= rows


def test_features_sorted_by_status_then_p_value_then_effect_size():
    features = [
        numeric_column("ok_none", psi=0.15, p=None),
        numeric_column("ok_p5_small", psi=0.1, p=0.5),
        numeric_column("drift_p001", psi=0.5, p=0.001),
        numeric_column("ok_p5_big", psi=0.12, p=0.5),
        numeric_column("drift_p0_small", psi=0.3, p=0.0),
        numeric_column("warn", psi=0.4, p=0.3),
        numeric_column("ok_p1", psi=0.01, p=0.1),
        numeric_column("drift_p0_big", psi=0.9, p=0.0),
    ]
    expected = [
        "drift_p0_big",
        "drift_p0_small",
        "drift_p001",
        "warn",
        "ok_p1",
        "ok_p5_big",
        "ok_p5_small",
        "ok_none",
    ]
    text = dr.render_html(make_report(features, []))
    cards = re.findall(r'id="features-\d+"><h3>([^<]+?) <span', text)
    assert cards == expected
    rows = re.findall(r'<tr class="\w+"><td class="name" data-v="([^"]+)">', text)
    assert rows == expected


def test_summary_table_is_sortable_without_external_files():
    text = dr.render_html(demo_report())
    page = Page(text)
    assert page.with_class("sortable", "table")
    scripts = [a for t, a in page.elements if t == "script"]
    assert len(scripts) == 1 and not scripts[0].get("src")
    assert "addEventListener('click'" in text
    assert not re.search(r"\b(src|href)=\"(?!#)", text)  # no external resource or link
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text
    # numeric sort keys are plain numbers
    assert 'data-v="4.9"' in text


def test_everything_from_the_data_is_escaped():
    features = [
        numeric_column(XSS, psi=3.0, p=0.0),
        categorical_column("kind\"'<", psi=0.1, p=0.9, values=["a", "<b>&\"'"]),
    ]
    report = make_report(features, [numeric_column("<i>pred</i>", psi=0.0, p=0.9)])
    report["reference_profile"] = "<img src=x onerror=alert(1)>"
    report["message"] = "<u>msg</u>"
    text = dr.render_html(report)
    page = Page(text)
    assert page.stack == []
    tags = {t for t, _ in page.elements}
    assert not tags & {"img", "b", "i", "u"}
    assert [t for t, _ in page.elements].count("script") == 1  # only the page's own sort script
    assert (
        XSS not in text
        and "<b>" not in text
        and "onerror=alert" not in text.replace("onerror=alert(1)&gt;", "")
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;b&gt;&amp;&quot;&#x27;" in text
    assert XSS in "".join(page.data)  # ... but reads as the column name


# --------------------------------------------------------------------------- calibration


def _noisy_binary(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logit = rng.normal(0.0, 2.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit / 2.5))).astype(np.int64)  # overconfident scores
    return 1 / (1 + np.exp(-logit)), y


def test_isotonic_after_metrics_are_cross_fitted_not_in_sample():
    p, y = _noisy_binary()
    fitted = cal.fit(p, y, "isotonic")
    report = fitted.report
    assert report["after_evaluation"] == "cross-fitted, 5 folds"
    assert report["after_in_sample"]["ece"] < 1e-9  # isotonic memorizes its own rows
    assert report["after"]["ece"] > 0.005  # held-out rows do not flatter it
    assert report["after"]["ece"] < report["before"]["ece"]
    # the saved parameters are still fitted on all rows
    assert cm.metrics(fitted.apply(p), y)["ece"] == pytest.approx(
        report["after_in_sample"]["ece"], abs=1e-12
    )


def test_kfold_indices_are_sklearns_folds():
    from sklearn.model_selection import KFold

    for n, k, seed in ((103, 5, 0), (10, 3, 7), (5, 5, 1)):
        ours = cal.kfold_indices(n, k, seed)
        theirs = [test for _, test in KFold(k, shuffle=True, random_state=seed).split(np.zeros(n))]
        assert [sorted(a.tolist()) for a in ours] == [b.tolist() for b in theirs]


def _ece_reference(conf: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """ECE with an explicit loop over (i/B, (i+1)/B] bins."""
    total = 0.0
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        mask = (conf > lo) & (conf <= hi) if i else (conf >= 0) & (conf <= hi)
        if mask.any():
            total += mask.sum() * abs(correct[mask].mean() - conf[mask].mean())
    return total / len(conf)


def test_temperature_cross_fitted_metrics_match_an_independent_computation():
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax
    from sklearn.model_selection import KFold

    rng = np.random.default_rng(5)
    n, k = 900, 4
    logits = rng.normal(size=(n, k)) * 3.0
    truth = log_softmax(logits / 3.0, axis=1)  # the model is 3x overconfident
    y = np.array([rng.choice(k, p=np.exp(row)) for row in truth])
    oof = np.empty((n, k))
    for train, test in KFold(5, shuffle=True, random_state=0).split(logits):
        t = minimize_scalar(
            lambda t, tr=train: (
                -log_softmax(logits[tr] / t, axis=1)[np.arange(len(tr)), y[tr]].mean()
            ),
            bounds=(0.05, 50),
            method="bounded",
            options={"xatol": 1e-10},
        ).x
        oof[test] = np.exp(log_softmax(logits[test] / t, axis=1))
    nll = -np.log(oof[np.arange(n), y]).mean()
    brier = ((oof - np.eye(k)[y]) ** 2).sum(axis=1).mean()
    conf, correct = oof.max(axis=1), (oof.argmax(axis=1) == y).astype(float)
    ece = _ece_reference(conf, correct, 15)

    fitted = cal.fit(logits, y, "temperature", input_kind="logits")
    after = fitted.report["after"]
    assert fitted.report["after_evaluation"] == "cross-fitted, 5 folds"
    assert after["nll"] == pytest.approx(nll, rel=1e-5)
    assert after["brier"] == pytest.approx(brier, rel=1e-5)
    assert after["ece"] == pytest.approx(ece, abs=1e-5)
    assert after["nll"] != pytest.approx(fitted.report["after_in_sample"]["nll"], rel=1e-6)


def test_too_few_rows_to_cross_fit_says_in_sample():
    fitted = cal.fit(np.array([0.7]), np.array([1]), "temperature")
    assert fitted.report["after_evaluation"].startswith("in-sample")
    assert "in-sample" in reliability.reliability_html(
        np.array([0.7]), fitted.apply(np.array([0.7])), np.array([1]), fitted.report, "t"
    )


def test_reliability_diagram_is_one_svg_with_counts_axes_and_faint_small_bins():
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.uniform(0.6, 0.66, 500), [0.02]])  # one bin of 500 rows, one of 1 row
    y = (rng.random(len(p)) < p).astype(np.int64)
    after = np.clip(p - 0.05, 0, 1)
    report = {
        "before": cm.metrics(p, y),
        "after": cm.metrics(after, y),
        "after_evaluation": "cross-fitted, 5 folds",
    }
    text = reliability.reliability_html(p, after, y, report, "Calibration (platt)")
    page = Page(text)
    assert [t for t, _ in page.elements].count("svg") == 1  # before and after on one chart
    assert "<img" not in text and "<script" not in text
    points = page.with_class("point", "circle")
    assert {a["class"] for a in points} == {"point before", "point after"}
    by_count = {(a["class"], int(a["data-count"])): a for a in points}
    big, small = by_count[("point before", 500)], by_count[("point before", 1)]
    assert float(small["fill-opacity"]) < 0.3 < 0.99 < float(big["fill-opacity"])
    assert float(small["r"]) < float(big["r"])
    assert page.with_class("diagonal", "line")
    texts = "".join(page.data)
    assert (
        "predicted probability of the positive class" in texts
        and "observed share of positives" in texts
    )
    assert "rows per bin" in texts  # the confidence histogram
    counts = [t for t in page.data if t.strip().isdigit()]
    assert "500" in counts and "1" in counts  # per-bin counts as text
    assert "cross-fitted, 5 folds" in texts


def test_reliability_page_escapes_report_values():
    p, y = np.array([0.2, 0.8]), np.array([0, 1])
    report = {"before": cm.metrics(p, y), "after": cm.metrics(p, y), "model": XSS, "input": "<b>"}
    text = reliability.reliability_html(p, p, y, report, "<i>t</i>")
    assert XSS not in text and "<b>" not in text and "<i>" not in text
    assert Page(text).stack == []


# --------------------------------------------------------------------------- headless Chromium


def _render(tmp_path: Path, name: str, text: str, size: str = "1200,1600") -> np.ndarray:
    path = tmp_path / f"{name}.html"
    path.write_text(text)
    image = browser.pixels(browser.screenshot(path, f"{name}.png", size=size))
    assert image.std() > 5  # not a blank page
    return image


def test_drift_report_screenshot(tmp_path):
    image = _render(tmp_path, "reports-drift", dr.render_html(demo_report()), "1200,4200")
    top = image[:200]
    assert browser.colour_pixels(top, (0xFD, 0xEC, 0xEA), 4) > 5000  # the red page banner
    assert browser.colour_pixels(image, (0xC0, 0x39, 0x2B), 10) > 200  # drift badges, outlines
    assert browser.colour_pixels(image, (0xB9, 0x77, 0x0E), 10) > 50  # the amber badge


def test_drift_report_screenshot_predictions_only(tmp_path):
    features = [numeric_column("a", psi=0.01, p=0.7)]
    predictions = [numeric_column("prediction", psi=2.0, p=1e-12)]
    image = _render(
        tmp_path,
        "reports-drift-predictions-only",
        dr.render_html(make_report(features, predictions)),
    )
    top = image[:120]
    assert browser.colour_pixels(top, (0xFE, 0xF5, 0xE7), 4) > 5000  # the amber page banner
    assert browser.colour_pixels(top, (0xEA, 0xF7, 0xEE), 4) == 0  # ... not green


def test_summary_table_sorts_in_chromium(tmp_path):
    features = [
        numeric_column("mid", psi=0.5, p=0.01),
        numeric_column("none", psi=0.05, p=None),
        numeric_column("low", psi=0.01, p=0.9),
        numeric_column("high", psi=3.0, p=0.0),
    ]
    page = dr.render_html(make_report(features, []))
    clicks = {
        "psi_asc": "h[4].click()",  # column, kind, status, p_value, psi
        "psi_desc": "h[4].click();h[4].click()",
        "p_desc": "h[3].click();h[3].click()",
        "name_asc": "h[0].click()",
    }
    expected = {
        "psi_asc": ["low", "none", "mid", "high"],
        "psi_desc": ["high", "mid", "none", "low"],
        "p_desc": ["low", "mid", "high", "none"],  # None stays last
        "name_asc": ["high", "low", "mid", "none"],
    }
    for name, click in clicks.items():
        path = tmp_path / f"{name}.html"
        script = (
            "<script>var h=document.querySelectorAll('#features ~ table.sortable thead th');"
            f"{click}</script></body>"
        )
        path.write_text(page.replace("</body>", script))
        dom = browser.dump_dom(path)
        table = dom[dom.index('id="features"') :]
        rows = re.findall(r'<tr class="\w+"><td class="name" data-v="([^"]+)">', table)
        assert rows == expected[name], name


def test_calibration_report_screenshot(tmp_path):
    p, y = _noisy_binary()
    fitted, after = cal.fit_and_evaluate(p, y, "isotonic")
    text = reliability.reliability_html(p, after, y, fitted.report, "Calibration (isotonic)")
    image = _render(tmp_path, "reports-calibration", text)
    assert browser.colour_pixels(image, (0xD6, 0x60, 0x4D), 6) > 100  # before series
    assert browser.colour_pixels(image, (0x21, 0x66, 0xAC), 6) > 100  # after series
