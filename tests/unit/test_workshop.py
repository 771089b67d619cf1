"""The workshop's structure: exercises, notebooks, docs and `make skip-to` agree with each other."""

import json
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_sandbox import cli, notebooks, workshop

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_exercises_are_numbered_one_to_n_and_makefile_knows_n():
    assert [e.number for e in workshop.EXERCISES] == list(range(1, len(workshop.EXERCISES) + 1))
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^EXERCISES := (\d+)", makefile, re.M).group(1) == str(len(workshop.EXERCISES))


def test_an_unknown_exercise_is_refused_with_the_range():
    with pytest.raises(ValueError, match="exercises 1 to 8"):
        workshop.exercise(9)
    assert cli.main(["workshop", "prepare", "0"]) == 2


def test_every_notebook_belongs_to_an_exercise_in_order():
    named = [f"{e.notebook}.ipynb" for e in workshop.EXERCISES if e.notebook]
    assert [p.name for p in NOTEBOOKS] == named
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, len(NOTEBOOKS) + 1)]


def test_workshop_doc_has_each_exercise_with_goal_steps_and_expected_result():
    doc = (ROOT / "docs" / "workshop.md").read_text()
    sections = re.split(r"^## ", doc, flags=re.M)
    for item in workshop.EXERCISES:
        matching = [s for s in sections if s.startswith(f"Exercise {item.number}: {item.title}")]
        assert len(matching) == 1, f"docs/workshop.md has no section 'Exercise {item.number}: {item.title}'"
        body = matching[0]
        for part in ("**Goal**", "**Do**", "**You should see**", f"make skip-to STEP={item.number}"):
            assert part in body, f"exercise {item.number} lacks {part}"
        if item.notebook:
            assert f"notebooks/{item.notebook}.ipynb" in body


def test_every_screenshot_the_doc_shows_is_in_the_repo():
    doc = (ROOT / "docs" / "workshop.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc)
    assert images, "the workshop shows no screenshot"
    for image in images:
        assert (ROOT / "docs" / image).is_file(), image


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_stripped_and_use_the_library(path):
    notebook = json.loads(path.read_text())
    assert not notebooks.has_outputs(notebook), f"run `make strip-notebooks`: {path.name} carries outputs"
    code = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    assert "from mlops_sandbox" in code


def test_strip_removes_outputs_and_counts(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    cell = new_code_cell("1 + 1", execution_count=3, outputs=[new_output("execute_result", {"text/plain": "2"})])
    path = tmp_path / "n.ipynb"
    nbformat.write(new_notebook(cells=[cell]), path)
    assert notebooks.strip(path) is True
    assert not notebooks.has_outputs(json.loads(path.read_text()))
    assert notebooks.strip(path) is False


def test_prepare_refuses_a_stack_that_already_holds_data(monkeypatch):
    monkeypatch.setattr(workshop, "s3_client", lambda settings: None)
    monkeypatch.setattr(workshop, "list_batches", lambda client, bucket, scenario: ["house_prices/batch.csv"])
    with pytest.raises(ValueError, match="fresh stack"):
        workshop.prepare(4)


def test_prepare_runs_what_the_earlier_exercises_leave_behind_in_order(monkeypatch):
    monkeypatch.setattr(workshop, "s3_client", lambda settings: None)
    monkeypatch.setattr(workshop, "list_batches", lambda client, bucket, scenario: [])
    monkeypatch.setattr(workshop, "AirflowAPI", lambda settings: None)
    done = []
    monkeypatch.setattr(workshop, "AFTER", {n: (lambda s, sc, a, st, n=n: done.append(n)) for n in workshop.AFTER})
    monkeypatch.setattr(
        workshop, "SETUP", {n: (lambda s, sc, a, st, n=n: done.append(f"start of {n}")) for n in workshop.SETUP}
    )
    state = workshop.prepare(5, say=lambda _: None)
    assert done == [2, 3, 4] and state["exercise"] == 5
    done.clear()
    workshop.prepare(2, say=lambda _: None)
    assert done == []
    done.clear()
    workshop.prepare(8, say=lambda _: None)  # exercise 7's retraining, then the candidate exercise 8 starts with
    assert done == [2, 3, 4, 5, 6, 7, "start of 8"]


def test_the_ab_exercise_sends_enough_traffic_for_the_promotion_to_trust_its_comparison():
    from mlops_sandbox.config import Settings

    expected_candidate_rows = workshop.AB_SHARE * workshop.AB_RATE * workshop.AB_SECONDS * workshop.AB_ROUNDS
    assert expected_candidate_rows >= 1.25 * Settings().experiment_min_labelled
    shadow_pairs = workshop.TRAFFIC_RATE * workshop.TRAFFIC_SECONDS  # every answered row gets its shadow twin
    assert shadow_pairs >= Settings().experiment_min_labelled


def _exercise_8_versions():
    """Versions 2 and 3 of exercise 8 as the workshop pipeline trains them: the MLP on the 12 batches of the new
    market (exercise 7), and on those and the 24 after them (exercise 8's start), on the workshop's clock."""
    from mlops_sandbox.features import preprocess
    from mlops_sandbox.ingest import validate
    from mlops_sandbox.schema import get_schema
    from mlops_sandbox.simulate import batch_times, generate_batch, parse_drift
    from mlops_sandbox.simulate.generator import parse_time
    from mlops_sandbox.train import fit

    schema, drift = get_schema("house_prices"), [parse_drift(workshop.CONCEPT_DRIFT)]

    def batches(start: str, count: int) -> list:
        times = batch_times(parse_time(start), timedelta(hours=1), count)
        return [generate_batch("house_prices", 42, when, workshop.ROWS_PER_BATCH, drift) for when in times]

    def trained(frames: list):
        table = preprocess(validate(pd.concat(frames, ignore_index=True), schema).valid, schema)
        return fit(table[table["split"] == "train"], schema, "mlp")

    new_market = batches(workshop.NEW_MARKET_START, workshop.SEED_BATCHES)
    more = batches(workshop.CANDIDATE_START, workshop.CANDIDATE_MORE_BATCHES)
    return schema, drift, trained(new_market), trained(new_market + more)


def test_the_ab_exercise_on_the_workshops_clock_gives_the_verdicts_the_doc_shows():
    """Exercise 8 is the same in every room: on its fixed simulated clock, the A/B rounds of the notebook give
    too few candidate rows after round 1 and an A/B comparison that is not `worse` after round 2, so the
    promotion the notebook ends with passes (a wall-clock run drew its houses anew, and once judged the better
    candidate worse)."""
    from mlops_sandbox.config import Settings
    from mlops_sandbox.experiment import CANDIDATE_VARIANT, MODE_AB, assign_variant, compare
    from mlops_sandbox.simulate import generate_batch

    schema, drift, production, candidate = _exercise_8_versions()
    rounds = []
    for round_ in range(1, workshop.AB_ROUNDS + 1):
        start = workshop.ab_round_start(round_)
        rounds.append(
            pd.concat(
                generate_batch("house_prices", 10 + round_, start + timedelta(minutes=second), workshop.AB_RATE, drift)
                for second in range(workshop.AB_SECONDS)
            )
        )
    first_ids, second_ids = set(rounds[0][schema.id_column]), set(rounds[1][schema.id_column])
    assert len(first_ids) == len(rounds[0]) and not first_ids & second_ids  # every customer once
    traffic = pd.concat(rounds, ignore_index=True)
    variant = [assign_variant(key, workshop.AB_SHARE) for key in traffic[schema.id_column]]
    on_candidate = pd.Series(variant, index=traffic.index) == CANDIDATE_VARIANT
    lines = pd.DataFrame(
        {
            "request_id": traffic[schema.id_column],
            "row": 0,
            "variant": variant,
            "prediction": np.where(on_candidate, candidate.predict(traffic), production.predict(traffic)),
            "actual": traffic[schema.target.name].astype(float),
        }
    )
    minimum = Settings().experiment_min_labelled
    first = lines.iloc[: len(rounds[0])]
    assert compare(first, MODE_AB, minimum)["verdict"] == "not_enough_data"
    result = compare(lines, MODE_AB, minimum)
    assert result["variants"][CANDIDATE_VARIANT]["labelled"] >= minimum
    assert result["verdict"] in {"inconclusive", "better"}, result["summary"]


def test_comparison_rows_flatten_the_monitors_comparisons():
    comparisons = [
        {
            "mode": "shadow",
            "until": "2026-11-24T10:01:00+00:00",
            "variants": {"production": {"labelled": 300}, "candidate": {"labelled": 300}},
            "comparison": {"labelled": 300, "difference": -9000.0, "low": -30000.0, "high": 12000.0},
            "verdict": "inconclusive",
        },
        {"mode": "ab", "verdict": "not_enough_data", "comparison": {"labelled": 0}},
    ]
    rows = workshop.comparison_rows(comparisons)
    assert rows[0] == {
        "until": "2026-11-24T10:01:00+00:00",
        "mode": "shadow",
        "labelled": 300,
        "candidate_labelled": 300,
        "production_labelled": 300,
        "mae_difference": -9000.0,
        "low": -30000.0,
        "high": 12000.0,
        "verdict": "inconclusive",
    }
    assert rows[1]["labelled"] == 0 and rows[1]["mae_difference"] is None and rows[1]["candidate_labelled"] is None
