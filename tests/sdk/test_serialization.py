"""Round-trips and errors of worker.common.serialization (pure, no I/O)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from worker.common.serialization import JSON, SUPER_JSON, TEXT, dumps, loads

UTC = dt.UTC


@pytest.mark.parametrize(
    "value",
    [None, 0, -1, 2**63 - 1, 1.5, -0.0, "", "héllo", True, False, [], {}, [1, "a", None],
     {"a": {"b": [1, 2, {"c": None}]}}],
)
def test_plain_json_stays_plain(value: Any) -> None:
    data, data_type = dumps(value)
    assert data_type == JSON
    assert orjson.loads(data) == value
    assert loads(data, data_type) == value


def test_none_is_json_null() -> None:
    assert dumps(None) == ("null", JSON)
    assert loads(None, JSON) is None
    assert loads("", JSON) is None


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        dt.datetime(2024, 5, 6, 7, 8, 9),  # naive stays naive
        dt.datetime(2024, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        dt.date(2020, 2, 29),
        dt.time(23, 59, 59, 1),
        dt.timedelta(days=-3, seconds=7, microseconds=9),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        Decimal("1.10"),
        Decimal("-1E+30"),
        b"\x00\xffbinary",
        {1, 2, 3},
        frozenset({"a"}),
        2**100,
        -(2**70),
    ],
)
def test_rich_values_round_trip(value: Any) -> None:
    data, data_type = dumps(value)
    assert data_type == SUPER_JSON
    back = loads(data, data_type)
    assert back == value
    assert type(back) is (set if isinstance(value, frozenset) else type(value))


def test_nested_rich_values_keep_their_types() -> None:
    value = {
        "when": dt.datetime(2024, 1, 1, tzinfo=UTC),
        "items": [{"id": uuid.UUID(int=1), "price": Decimal("9.99")}, {"plain": 1}],
        "dotted.key": {"back\\slash": dt.date(2021, 1, 1)},
        "tags": {"x", "y"},
        "by_id": {1: "one", 2: dt.date(2022, 2, 2)},
        "nan": math.nan,
        "inf": [math.inf, -math.inf],
    }
    back = loads(*dumps(value))
    assert back["when"] == value["when"]
    assert back["items"] == value["items"]
    assert back["dotted.key"] == value["dotted.key"]
    assert back["tags"] == {"x", "y"}
    assert back["by_id"] == {1: "one", 2: dt.date(2022, 2, 2)}
    assert math.isnan(back["nan"])
    assert back["inf"] == [math.inf, -math.inf]


def test_superjson_envelope_shape() -> None:
    data, data_type = dumps({"a": {"b": dt.datetime(2024, 1, 1, tzinfo=UTC)}, "s": {1}})
    envelope = orjson.loads(data)
    assert data_type == SUPER_JSON
    assert envelope["json"] == {"a": {"b": "2024-01-01T00:00:00+00:00"}, "s": [1]}
    # SuperJSON's standard Date (Trigger.dev's SDK cannot read a custom tag)
    assert envelope["meta"]["values"] == {"a.b": ["Date"], "s": ["set"]}


def test_reads_superjson_written_by_the_typescript_sdk() -> None:
    data = orjson.dumps({
        "json": {"d": "2024-01-01T00:00:00.000Z", "n": "10", "u": None, "s": [1, 2]},
        "meta": {"values": {"d": ["Date"], "n": ["bigint"], "u": ["undefined"], "s": ["set"]}},
    }).decode()
    back = loads(data, SUPER_JSON)
    assert back == {"d": dt.datetime(2024, 1, 1, tzinfo=UTC), "n": 10, "u": None, "s": {1, 2}}


def test_tuples_become_lists_and_stay_plain() -> None:
    assert dumps({"t": (1, 2)}) == ('{"t":[1,2]}', JSON)


def test_pydantic_models_become_their_dict() -> None:
    class User(BaseModel):
        name: str
        joined: dt.datetime

    user = User(name="Ada", joined=dt.datetime(2020, 1, 1, tzinfo=UTC))
    assert loads(*dumps(user)) == {"name": "Ada", "joined": user.joined}

    class Plain(BaseModel):
        n: int

    assert dumps([Plain(n=1)]) == ('[{"n":1}]', JSON)


def test_dataclasses_and_enums() -> None:
    class Color(enum.Enum):
        RED = "red"

    @dataclasses.dataclass
    class Point:
        x: int
        color: Color

    assert loads(*dumps(Point(1, Color.RED))) == {"x": 1, "color": "red"}


def test_unserialisable_value_names_type_and_path() -> None:
    class Thing:
        pass

    with pytest.raises(TypeError, match=r"Thing.*\$\.a\[1\]\.b"):
        dumps({"a": [1, {"b": Thing()}]})


def test_circular_reference_is_an_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="circular"):
        dumps(loop)


def test_text_plain_and_unknown_types() -> None:
    assert loads("hi", TEXT) == "hi"
    with pytest.raises(ValueError, match="unknown data type"):
        loads("1", "application/x-nope")
    with pytest.raises(ValueError, match="custom"):
        loads('{"json": 1, "meta": {"values": [["custom", "nope"]]}}', SUPER_JSON)
