"""The process group's collective timeout: $OMNISTAGE_PG_TIMEOUT_S, else 600 s; a bad value is refused by name."""

from datetime import timedelta

import pytest

from model.pg_timeout import PG_TIMEOUT_ENV, process_group_timeout


def test_default_and_environment(monkeypatch):
    monkeypatch.delenv(PG_TIMEOUT_ENV, raising=False)
    assert process_group_timeout() == timedelta(seconds=600)
    monkeypatch.setenv(PG_TIMEOUT_ENV, "2.5")
    assert process_group_timeout() == timedelta(seconds=2.5)


@pytest.mark.parametrize("value", ["0", "-3", "ten", "nan"])
def test_a_bad_value_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(PG_TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=r"\$OMNISTAGE_PG_TIMEOUT_S=.*seconds > 0"):
        process_group_timeout()
