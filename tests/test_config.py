"""A study's recorded configuration against a later run's options."""

from __future__ import annotations

from pathlib import Path

import pytest

from optuna_rnn import ConfigMismatchError, DatasetSpec, SearchSpace
from optuna_rnn.config import StudyConfig, merge_config

ADVICE = "; use the recorded value, drop the option, or choose a new --study"


def test_a_refused_resume_names_only_the_entries_that_differ(tmp_path: Path) -> None:
    recorded = StudyConfig(dataset=DatasetSpec(name="digits"), space=SearchSpace(grad_clip=1.0)).to_dict()
    with pytest.raises(ConfigMismatchError) as refused:
        merge_config({"space": SearchSpace(grad_clip=None)}, recorded)
    assert str(refused.value) == (
        "study was created with space.grad_clip=1.0, this run asks for space.grad_clip='none'" + ADVICE
    )
    data = str(tmp_path / "a-rather-long-folder-name" / "and-a-long-file-name.csv")
    recorded = StudyConfig(dataset=DatasetSpec(path=data, horizon=24)).to_dict()
    with pytest.raises(ConfigMismatchError) as refused:
        merge_config({"dataset": DatasetSpec(path=data, horizon=12)}, recorded)
    assert str(refused.value) == (
        "study was created with dataset.horizon=24, this run asks for dataset.horizon=12" + ADVICE
    )
    with pytest.raises(
        ConfigMismatchError, match=r"^study was created with max_epochs=30, this run asks for 9;"
    ):
        merge_config({"max_epochs": 9}, recorded)


def test_the_same_folder_and_file_through_a_symbolic_link_resume_the_study(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    recorded = StudyConfig(
        dataset=DatasetSpec(path=str(real / "s.csv")), artifacts=str(real / "art")
    ).to_dict()
    through_link = {
        "dataset": DatasetSpec(path=str(tmp_path / "link" / "s.csv")),
        "artifacts": str(tmp_path / "link" / "art"),
    }
    merged = merge_config(through_link, recorded)
    assert merged.dataset.path == str(real / "s.csv") and merged.artifacts == str(real / "art")
    with pytest.raises(ConfigMismatchError, match="created with artifacts="):
        merge_config({"artifacts": str(tmp_path / "art")}, recorded)
    with pytest.raises(ConfigMismatchError, match="created with dataset.path="):
        merge_config({"dataset": DatasetSpec(path=str(tmp_path / "s.csv"))}, recorded)


def test_a_study_recorded_before_forecast_was_a_parameter_goes_on_forecasting_levels() -> None:
    made = StudyConfig(dataset=DatasetSpec(name="co2"), space=SearchSpace(hidden_size=8)).to_dict()
    del made["space"]["forecast"]  # as a study created before the parameter records it
    assert merge_config({}, made).space.forecast == "level"
    # its --space file given again: the default search over both is not taken for a change
    assert merge_config({"space": SearchSpace(hidden_size=8)}, made).space.forecast == "level"
    asked = "space.forecast='level', this run asks for space.forecast='change'"
    with pytest.raises(ConfigMismatchError, match=asked):  # asked for outright: refused
        merge_config({"space": SearchSpace(hidden_size=8, forecast="change")}, made)
    # a new study searches both
    assert StudyConfig(dataset=DatasetSpec(name="co2")).space.forecast == SearchSpace().forecast


def test_a_refused_resume_leaves_out_a_target_named_one_way_and_left_out_the_other(tmp_path: Path) -> None:
    csv = tmp_path / "load.csv"
    csv.write_text("x,load\n" + "".join(f"{i % 7},{i % 11}\n" for i in range(200)))  # load: the default
    recorded = StudyConfig(dataset=DatasetSpec(path=str(csv), target="load", horizon=24)).to_dict()
    with pytest.raises(ConfigMismatchError) as refused:
        merge_config({"dataset": DatasetSpec(path=str(csv), horizon=1)}, recorded)
    # it listed dataset.target='load' against None too, which asks for the same column
    assert (
        str(refused.value)
        == "study was created with dataset.horizon=24, this run asks for dataset.horizon=1" + ADVICE
    )
