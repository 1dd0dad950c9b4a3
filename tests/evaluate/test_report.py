"""What the KFP UI shows: Markdown tables and self-contained HTML pages, from the steps' real files."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from components.common import storage
from components.evaluate import plots, report
from components.evaluate.aggregate import aggregate_metrics
from components.evaluate.aggregate import run as aggregate_run
from components.evaluate.config import AggregateConfig
from components.evaluate.report import Aggregated, ReportError, SplitResult

VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Page(HTMLParser):
    """Checks nesting while collecting the text, the image sources and every URL-valued attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "img":
            self.images.append(values["src"])
        self.links += [v for k, v in attrs if k in ("src", "href") and v is not None]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data) -> None:
        self.text.append(data)


def _parse(page: str) -> _Page:
    assert page.startswith("<!DOCTYPE html>")
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], f"unclosed {parser.stack}"
    assert all(link.startswith("data:image/png;base64,") for link in parser.links)  # nothing external
    return parser


def _png(data: str) -> bytes:
    return base64.b64decode(data.removeprefix("data:image/png;base64,"), validate=True)


def _split_doc(split: int, rank1: float, mAP: float, dataset: str = "prid2011") -> dict:
    """The shape of dal evaluate's metrics.json."""
    return {"rank1": rank1, "rank5": 0.8, "rank10": 0.9, "rank20": 1.0, "mAP": mAP,
            "mAP_trapezoid": mAP - 0.05, "mINP": mAP / 2, "num_queries": 89, "num_valid_queries": 88,
            "num_queries_without_match": 1, "num_gallery": 89, "cmc": [rank1] + [1.0] * 19,
            "split": split, "protocol": "splits", "direction": "forward", "dataset": dataset}  # fmt: skip


def _aggregated(*pairs: tuple[float, float], dataset: str = "prid2011") -> Aggregated:
    docs = [_split_doc(i, r, m, dataset) for i, (r, m) in enumerate(pairs)]
    return Aggregated.from_document(aggregate_metrics(docs), "test")


def _row(markdown: str, label: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_markdown_table_mean_std_and_initial_column() -> None:
    trained = _aggregated((0.5, 0.4), (0.7, 0.6))
    initial = _aggregated((0.1, 0.05), (0.2, 0.15))
    text = report.metrics_markdown(trained, initial)
    assert _row(text, "metric") == ["metric", "trained", "initial weights"]
    assert _row(text, "rank-1") == ["rank-1", "60.00 ± 10.00 %", "15.00 ± 5.00 %"]
    assert _row(text, "mAP") == ["mAP", "50.00 ± 10.00 %", "10.00 ± 5.00 %"]
    assert _row(text, "rank-20") == ["rank-20", "100.00 ± 0.00 %", "100.00 ± 0.00 %"]
    assert _row(text, "splits") == ["splits", "2", "2"]
    assert [label for label in report.LABELS.values() if f"| {label} |" in text] == list(
        report.LABELS.values()
    )
    alone = report.metrics_markdown(trained)
    assert _row(alone, "rank-1") == ["rank-1", "60.00 ± 10.00 %"] and "initial" not in alone
    assert "![" not in alone


def test_markdown_one_split_has_no_spread_and_embeds_the_picture() -> None:
    png = plots.cmc_png({"mean": [0.5, 0.75, 1.0]})
    text = report.metrics_markdown(_aggregated((0.5, 0.25), dataset="mars"), cmc_png=png)
    assert _row(text, "rank-1") == ["rank-1", "50.00 %"] and _row(text, "splits") == ["splits", "1"]
    (source,) = re.findall(r"!\[mean CMC curve\]\((data:image/png;base64,[^)]+)\)", text)
    assert _png(source) == png


def test_markdown_escapes_the_dataset_name() -> None:
    text = report.metrics_markdown(_aggregated((0.5, 0.5), dataset="a|b <script>x</script>"))
    heading = text.splitlines()[0]
    assert "<script>" not in text and "&lt;script&gt;" in heading and "a\\|b" in heading


def test_markdown_refuses_initial_weights_of_another_dataset() -> None:
    with pytest.raises(ReportError, match="initial weights evaluated on 'mars'"):
        report.metrics_markdown(_aggregated((0.5, 0.5)), _aggregated((0.1, 0.1), dataset="mars"))


def test_split_page_embeds_its_pictures_and_escapes_text() -> None:
    split = SplitResult.from_document(_split_doc(3, 0.8125, 0.7, dataset="<b>prid</b>"), "test")
    cmc, ranklist = b"\x89PNG cmc bytes", b"\x89PNG ranklist bytes"
    page = report.split_report_html("split 3 & <i>more</i>", split, cmc, ranklist)
    parsed = _parse(page)
    assert "b" not in parsed.tags and "i" not in parsed.tags  # text stayed text
    text = " ".join(parsed.text)
    assert "split 3 & <i>more</i>" in text and "<b>prid</b>" in text
    assert [_png(src) for src in parsed.images] == [cmc, ranklist]
    assert "81.25 %" in text and "70.00 %" in text and "65.00 %" in text  # rank-1, mAP, trapezoid
    assert "queries without a match" in text
    no_ranklist = _parse(report.split_report_html("t", split, cmc, None))
    assert [_png(src) for src in no_ranklist.images] == [cmc]


def test_aggregate_page_with_initial_weights() -> None:
    trained, initial = _aggregated((0.5, 0.4), (0.7, 0.6)), _aggregated((0.1, 0.05), (0.2, 0.15))
    parsed = _parse(report.aggregate_report_html("agg", trained, b"png", initial))
    cells = [t for t in parsed.text if t.strip()]
    assert cells[cells.index("rank-1") : cells.index("rank-1") + 3] == [
        "rank-1",
        "60.00 ± 10.00 %",
        "15.00 ± 5.00 %",
    ]
    assert "initial weights" in cells and [_png(src) for src in parsed.images] == [b"png"]


def test_documents_that_are_not_the_steps_files_are_refused() -> None:
    with pytest.raises(ReportError, match="x.json: missing rank1_std"):
        Aggregated.from_document(_split_doc(0, 0.5, 0.5), "x.json")  # a split's file, not aggregate's
    with pytest.raises(ReportError, match="y.json: missing cmc"):
        SplitResult.from_document({k: v for k, v in _split_doc(0, 0.5, 0.5).items() if k != "cmc"}, "y.json")


def test_writers_read_what_the_steps_write(tmp_path: Path) -> None:
    """The layout the evaluate and aggregate steps produce, through their own run functions."""
    inputs = []
    for split, (rank1, mAP) in enumerate([(0.5, 0.4), (0.7, 0.6)]):
        folder = tmp_path / f"eval{split}"  # what dal evaluate writes (its own tests cover run())
        storage.write_json(str(folder / "metrics.json"), _split_doc(split, rank1, mAP))
        storage.write_bytes(str(folder / "cmc.png"), plots.cmc_png({"CMC": [rank1, 1.0]}))
        inputs.append(str(folder))
    aggregate_run(AggregateConfig(inputs=tuple(inputs), output=str(tmp_path / "agg"), mlflow_tracking_uri=""))

    report.write_split_report(inputs[0], str(tmp_path / "out" / "split.html"))
    split_page = _parse((tmp_path / "out" / "split.html").read_text())
    assert [_png(s) for s in split_page.images] == [(tmp_path / "eval0" / "cmc.png").read_bytes()]

    report.write_aggregate_report(str(tmp_path / "agg"), str(tmp_path / "out" / "agg.html"))
    agg_page = _parse((tmp_path / "out" / "agg.html").read_text())
    assert [_png(s) for s in agg_page.images] == [(tmp_path / "agg" / "cmc.png").read_bytes()]
    assert "60.00 ± 10.00 %" in agg_page.text

    report.write_aggregate_markdown(
        str(tmp_path / "agg"), str(tmp_path / "out" / "agg.md"), str(tmp_path / "agg")
    )
    markdown = (tmp_path / "out" / "agg.md").read_text()
    assert _row(markdown, "rank-1") == ["rank-1", "60.00 ± 10.00 %", "60.00 ± 10.00 %"]
    (source,) = re.findall(r"\((data:image/png;base64,[^)]+)\)", markdown)
    assert _png(source)[:4] == b"\x89PNG"  # trained and initial drawn together


def test_writers_name_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"nothing/metrics.json: no such file"):
        report.write_split_report(str(tmp_path / "nothing"), str(tmp_path / "page.html"))
    assert not (tmp_path / "page.html").exists()


def test_a_skipped_evaluation_gets_a_page_with_its_note(tmp_path: Path) -> None:
    note = "protocol labelled: no labelled test tracklets <none>"
    folder = str(tmp_path / "evaluation")
    storage.write_json(f"{folder}/metrics.json", {"evaluated": False, "note": note, "dataset": "tracklets"})
    report.write_split_report(folder, str(tmp_path / "split.html"))
    report.write_aggregate_report(folder, str(tmp_path / "aggregate.html"))
    report.write_aggregate_markdown(folder, str(tmp_path / "table.md"))
    for name in ("split.html", "aggregate.html"):
        page = (tmp_path / name).read_text()
        assert "Not evaluated: protocol labelled: no labelled test tracklets &lt;none&gt;" in page
    assert (
        "Not evaluated: protocol labelled: no labelled test tracklets &lt;none&gt;"
        in (tmp_path / "table.md").read_text()
    )


def _with_verification(doc: dict, tpr: float, threshold: float) -> dict:
    """dal evaluate's verification keys (tpr/threshold per fixed FPR, AUC, pair counts)."""
    from components.evaluate.metrics import VERIFICATION_FPRS, threshold_key, tpr_key

    for i, fpr in enumerate(VERIFICATION_FPRS):
        doc[tpr_key(fpr)], doc[threshold_key(fpr)] = tpr + 0.1 * i, threshold - 0.1 * i
    return doc | {"roc_auc": 0.9, "num_genuine_pairs": 88, "num_impostor_pairs": 7832}


def test_verification_table_and_roc_on_the_pages(tmp_path: Path) -> None:
    inputs = []
    for split, (tpr, threshold) in enumerate([(0.5, 0.8), (0.7, 0.6)]):
        folder = tmp_path / f"eval{split}"
        storage.write_json(
            str(folder / "metrics.json"), _with_verification(_split_doc(split, 0.5, 0.4), tpr, threshold)
        )
        storage.write_bytes(str(folder / "cmc.png"), plots.cmc_png({"CMC": [0.5, 1.0]}))
        storage.write_bytes(str(folder / "roc.png"), plots.roc_png([0.0, 1.0], [0.0, 1.0], {}))
        inputs.append(str(folder))
    report.write_split_report(inputs[0], str(tmp_path / "split.html"))
    page = _parse((tmp_path / "split.html").read_text())
    folder = tmp_path / "eval0"
    assert [_png(s) for s in page.images] == [(folder / f).read_bytes() for f in ("cmc.png", "roc.png")]
    cells = [t.strip() for t in page.text if t.strip()]
    at = cells.index("0.01")  # the row of FPR 0.01: TPR, then the threshold
    assert cells[at : at + 3] == ["0.01", "60.00 %", "0.7000"]
    assert "ROC AUC 0.9000" in cells and "same-person pairs" in cells and "7832" in cells

    aggregate_run(AggregateConfig(inputs=tuple(inputs), output=str(tmp_path / "agg"), mlflow_tracking_uri=""))
    aggregated = report.read_aggregated(str(tmp_path / "agg"))
    assert aggregated.verification["tpr_at_fpr_0.01"] == pytest.approx(0.7)  # mean of 0.6 and 0.8
    text = report.metrics_markdown(aggregated)
    assert _row(text, "0.01") == ["0.01", "70.00 %", "0.6000"]  # means over the two splits
    agg_page = _parse(report.aggregate_report_html("agg", aggregated, b"png"))
    cells = [t.strip() for t in agg_page.text if t.strip()]
    assert cells[cells.index("0.1") : cells.index("0.1") + 3] == ["0.1", "80.00 %", "0.5000"]
    # Evaluations from before verification existed: the pages simply leave it out.
    assert "verification" not in report.metrics_markdown(_aggregated((0.5, 0.4)))
    assert "ROC AUC" not in report.split_report_html(
        "t", SplitResult.from_document(_split_doc(0, 0.5, 0.5), "t"), b"png", None
    )


def test_every_metric_and_count_has_a_label() -> None:
    from components.evaluate.metrics import COUNT_KEYS, METRIC_KEYS

    assert tuple(report.LABELS) == METRIC_KEYS and tuple(report.COUNT_LABELS) == COUNT_KEYS


def test_rerank_and_aqe_variants_get_their_columns(tmp_path: Path) -> None:
    from components.evaluate.metrics import METRIC_KEYS

    inputs = []
    for split, rank1 in enumerate((0.5, 0.7)):
        doc = _split_doc(split, rank1, 0.4)
        doc |= {f"rerank_{k}": doc[k] + 0.1 for k in METRIC_KEYS}  # only re-ranking was asked for
        folder = tmp_path / f"eval{split}"
        storage.write_json(str(folder / "metrics.json"), doc)
        storage.write_bytes(str(folder / "cmc.png"), plots.cmc_png({"CMC": [rank1, 1.0]}))
        inputs.append(str(folder))
    report.write_split_report(inputs[1], str(tmp_path / "split.html"))
    cells = [t.strip() for t in _parse((tmp_path / "split.html").read_text()).text if t.strip()]
    at = cells.index("re-ranked")
    assert cells[at - 2 : at + 4] == ["metric", "plain", "re-ranked", "rank-1", "70.00 %", "80.00 %"]
    assert "AQE" not in cells

    aggregate_run(AggregateConfig(inputs=tuple(inputs), output=str(tmp_path / "agg"), mlflow_tracking_uri=""))
    aggregated = report.read_aggregated(str(tmp_path / "agg"))
    markdown = report.metrics_markdown(aggregated)
    headers = [line for line in markdown.splitlines() if line.startswith("| metric |")]
    assert headers[-1] == "| metric | plain | re-ranked |"
    rank1_rows = [line for line in markdown.splitlines() if line.startswith("| rank-1 |")]
    assert rank1_rows[-1].split("|")[2:4] == [" 60.00 ± 10.00 % ", " 70.00 ± 10.00 % "]
    page = _parse(report.aggregate_report_html("agg", aggregated, b"png"))
    assert "70.00 ± 10.00 %" in [t.strip() for t in page.text]
