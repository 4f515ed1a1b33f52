import pandas as pd

from diffkd_study.nbutil import records


def test_records_drop_a_default_index_but_keep_a_named_one():
    plain = pd.DataFrame({"model": ["a", "b"], "auc": [0.5, 0.75]})
    assert records(plain) == [{"model": "a", "auc": 0.5}, {"model": "b", "auc": 0.75}]
    named = plain.set_index("model")
    assert records(named) == [{"model": "a", "auc": 0.5}, {"model": "b", "auc": 0.75}]
    multi = pd.DataFrame({"auc": [0.5]}, index=pd.MultiIndex.from_tuples([("a", "test")], names=["model", "set"]))
    assert records(multi) == [{"model": "a", "set": "test", "auc": 0.5}]
    filtered = plain[plain["auc"] > 0.6]  # row positions left by filtering are not data either
    assert records(filtered) == [{"model": "b", "auc": 0.75}]
