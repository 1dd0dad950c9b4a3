"""``scripts/bench_table.py`` reads what the bench scripts really write (tiny runs here) into one
table of figures beside their anchors; a script that did not run is listed and fails the table."""

from __future__ import annotations

from scripts import bench_rerank, bench_search, bench_table


def test_the_table_of_real_tiny_runs(tmp_path, capsys) -> None:
    assert bench_search.main(
        ["--quick", "--num-queries", "20", "--num-gallery", "2001", "--dim", "16", "--threads", "1",
         "--output", str(tmp_path / "search.json")]
    ) == 0  # fmt: skip
    assert bench_rerank.main(
        ["--quick", "--num-queries", "20", "--num-gallery", "150", "--dim", "16", "--block", "64",
         "--output", str(tmp_path / "rerank.json")]
    ) == 0  # fmt: skip
    capsys.readouterr()
    rows, missing = bench_table.collect(tmp_path)
    assert [r.figure for r in rows] == [
        "re-ranking 20 x 150",
        "re-ranking peak memory",
        "re-ranking = reference",
        "exact top-10 search 20 x 2,001",
    ]
    assert rows[2].met is True and rows[3].anchor.startswith("faiss IndexFlatIP")
    assert rows[3].measured.endswith(("(torch's BLAS)", "(numpy's BLAS)"))
    assert rows[0].ratio.endswith("x faster") and rows[0].goal == ">= 20x"
    assert missing == ["evaluate.json", "train-laptop.json", "train.json", "train-anchors.json"]
    assert bench_table.main(["--input", str(tmp_path), "--markdown"]) == 1  # some did not run
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "| figure | measured | anchor | ratio | goal | met |"
    assert printed[1].startswith("|:---") and len(printed) == 2 + len(rows) + len(missing) + (
        1 if any(r.met is False for r in rows) else 0
    )
    assert "not run: train.json" in printed
