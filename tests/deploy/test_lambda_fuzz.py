"""The Lambda handler answers every malformed event with a 4xx `{"message"}` and never raises.

A seeded generator builds hundreds of broken events: wrong types at every level, unicode
digits, bad base64, oversize and deeply nested bodies, missing fields. Each one is guaranteed
invalid, so any call that reaches the (stubbed, empty) endpoint is a failure too.
"""

from __future__ import annotations

import base64
import json
import random
import reprlib
from collections import Counter
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.stub import Stubber

SEED = 20261202
CASES = 800
MIB6 = 6 * 1024 * 1024
URL = "https://example.com/dog.jpg"
IMAGE_B64 = base64.b64encode(b"\xff\xd8\xff\xe0 not really a jpeg").decode()
# Digits that str.isdigit() accepts but int() refuses, and digits int() accepts that are not ASCII.
UNICODE_DIGITS = ["²", "³", "¹", "⁴", "①", "٣", "۳", "໓", "१", "１", "𝟕", "߃", "᠓", "௫"]
SCALARS: list[Any] = [None, True, False, 0, -1, 3, 2**70, 1.5, float("nan"), float("inf"), -0.0, b"x", b"", ()]
IMAGE_TYPES = ["image/jpeg", "image/png", "application/x-image", "IMAGE/PNG; charset=x"]


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    from deploy.lambda_function import lambda_function

    return lambda_function


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    settings = Config(signature_version=UNSIGNED, retries={"max_attempts": 1})
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1", config=settings)
    with Stubber(runtime) as stubber:  # nothing queued: a call to the endpoint answers 502, not 4xx
        yield runtime, stubber


# --- building blocks -------------------------------------------------------------------------


def nested(rng: random.Random, depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def junk(rng: random.Random) -> Any:
    """Any value that is not a string."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(SCALARS)
    if kind == 1:
        return [junk(rng) for _ in range(rng.randrange(3))] if rng.random() < 0.7 else []
    if kind == 2:
        return {rng.choice(["a", "url", "topk", 1, None]): rng.choice(SCALARS) for _ in range(rng.randrange(3))}
    if kind == 3:
        return nested(rng, rng.choice([3, 50, 5000]))
    if kind == 4:
        return bytearray(b"\x89PNG")
    return rng.choice([set(), frozenset({1}), object(), 1j])


def weird_text(rng: random.Random) -> str:
    """Bytes-ish, control, surrogate, unicode-digit and whitespace strings."""
    parts = [
        "b'\\x89PNG\\r\\n'",
        "\x00",
        "\ud800",
        "\udfff",
        "\u2028",
        "\ufeff",
        " ",
        "\t",
        "%",
        "é",
        "🐶",
        rng.choice(UNICODE_DIGITS),
        str(rng.randrange(10)),
    ]
    return "".join(rng.choice(parts) for _ in range(rng.randrange(1, 8)))


def bad_topk(rng: random.Random) -> Any:
    """A topk value that is not an integer from 1 to 1000, nor a plain ASCII decimal within it."""
    choices: list[Callable[[], Any]] = [
        lambda: rng.choice(UNICODE_DIGITS),
        lambda: str(rng.randrange(1, 9)) + rng.choice(UNICODE_DIGITS),
        lambda: rng.choice(["0", "00", "-3", "+3", " 3", "3 ", "3.0", "1e2", "0x10", "3_0", "", "٣٠", "1001"]),
        lambda: str(rng.randrange(1001, 10**6)),
        lambda: "9" * rng.choice([5, 400, 5000]),
        lambda: rng.choice([0, -1, -(2**70), 1001, 2**64, 10**400, 10**5000]),
        lambda: rng.choice([True, False, None, 3.0, float("nan"), [3], {"v": 3}, b"3"]),
        lambda: weird_text(rng) + "x",
    ]
    return rng.choice(choices)()


def bad_base64(rng: random.Random) -> str:
    return rng.choice(
        [
            "%%%",
            "abc",  # bad padding
            "ab=c",
            "YWJj\nZGVm",
            "YWJj ZGVm",
            "Y" * rng.randrange(1, 4),
            IMAGE_B64[:-1] + "٣",
            rng.choice(UNICODE_DIGITS) * 4,
            "====",
            "\ud800AAA",
            weird_text(rng) + "!",
        ]
    )


def too_deep_json(rng: random.Random) -> str:
    depth = rng.choice([9, 10, 33, 1000, 5000, 200_000])
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}"), ('[{"a":', "}]")])
    inner = opener * depth + "1" + closer * depth
    if rng.random() < 0.3:  # unbalanced: only openers
        inner = opener * depth
    if rng.random() < 0.5:  # hidden inside an otherwise valid request
        return json.dumps({"url": URL})[:-1] + ', "extra": ' + inner + "}"
    return inner


def not_a_request_json(rng: random.Random) -> str:
    payload = rng.choice(
        [
            None,
            1,
            "https://example.com/dog.jpg",
            [URL],
            {},
            {"URL": URL},
            {"picture": URL, "topk": 3},
            {"url": None},
            {"url": 5},
            {"url": ""},
            {"url": [URL]},
            {"image_b64": {"data": IMAGE_B64}},
            {"image_b64": "%%%"},
            {"url": URL, "topk": "0"},
            {"url": URL, "topk": 0},
            {"url": URL, "topk": True},
            {"url": URL, "topk": 2.5},
            {"url": URL, "logits": "yes"},
            {"url": URL, "logits": 1},
        ]
    )
    text = json.dumps(payload)
    if rng.random() < 0.2:  # the same, with an integer over Python's digit limit
        return '{"url": "' + URL + '", "topk": 1' + "0" * 5000 + "}"
    return text


# --- event families (each returns an event that must be refused) -----------------------------


def proxy_base(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.5:
        return {"headers": {"content-type": "application/json"}, "body": json.dumps({"url": URL})}
    return {"headers": {"Content-Type": rng.choice(IMAGE_TYPES)}, "body": IMAGE_B64, "isBase64Encoded": True}


def f_not_a_dict(rng: random.Random) -> Any:
    return rng.choice([junk(rng), weird_text(rng), [{"url": URL}], json.dumps({"url": URL}), None])


def f_direct_no_target(rng: random.Random) -> Any:
    keys = ["topk", "logits", "URL", "image", "Body", "headers", "", "\ud800", "٣"]
    return {rng.choice(keys): rng.choice([junk(rng), weird_text(rng)]) for _ in range(rng.randrange(0, 4))}


def f_direct_bad_target(rng: random.Random) -> Any:
    key = rng.choice(["url", "image_b64"])
    value = rng.choice([junk(rng), ""]) if key == "url" else rng.choice([junk(rng), "", bad_base64(rng)])
    event = {key: value}
    if rng.random() < 0.5:
        event["topk"] = rng.randrange(1, 1001)
    return event


def f_direct_bad_option(rng: random.Random) -> Any:
    event: dict[str, Any] = rng.choice([{"url": URL}, {"image_b64": IMAGE_B64}])
    if rng.random() < 0.6:
        event["topk"] = bad_topk(rng)
    else:
        logits = rng.choice([junk(rng), "true", "false", "1"])
        event["logits"] = "true" if isinstance(logits, bool) else logits
    return event


def f_proxy_bad_map(rng: random.Random) -> Any:
    event = proxy_base(rng)
    key = rng.choice(["headers", "queryStringParameters"])
    kind = rng.randrange(4)
    if kind == 0:
        value: Any = rng.choice(["content-type: image/jpeg", "topk=3", ["topk", "3"], [["topk", "3"]], 3, True, b"x"])
    elif kind == 1:
        value = {"topk" if key == "queryStringParameters" else "content-type": rng.choice([3, 1, None, ["3"], 3.0])}
    elif kind == 2:
        value = {rng.choice([1, None, ("a",), b"k"]): "v"}
    else:
        value = junk(rng)
        if value is None or value == {}:
            value = "none"
    event[key] = value
    return event


def f_proxy_bad_query_topk(rng: random.Random) -> Any:
    event = proxy_base(rng)
    value = bad_topk(rng)
    topk = "9" * 30 if isinstance(value, int) and value.bit_length() > 64 else str(value)  # str() has a digit limit
    if topk.isascii() and topk.isdigit() and len(topk) < 5 and 1 <= int(topk) <= 1000:  # str(True) etc. stay bad
        topk = "0"
    event["queryStringParameters"] = {"topk": topk}
    return event


def f_proxy_bad_flag(rng: random.Random) -> Any:
    event = proxy_base(rng)
    event["isBase64Encoded"] = rng.choice(["true", "false", "True", 1, 0, None, [], {}, [True], 1.0, b"1"])
    return event


def f_proxy_bad_body_type(rng: random.Random) -> Any:
    event = proxy_base(rng)
    body = junk(rng)
    while body is None:
        body = junk(rng)
    event["body"] = rng.choice([body, {"url": URL}, [IMAGE_B64], b"\xff\xd8", bytearray(b"{}")])
    return event


def f_proxy_bad_base64(rng: random.Random) -> Any:
    event = proxy_base(rng)
    event["body"], event["isBase64Encoded"] = bad_base64(rng), True
    return event


def f_proxy_deep_json(rng: random.Random) -> Any:
    text = too_deep_json(rng)
    encoded = rng.random() < 0.3
    event: dict[str, Any] = {"body": base64.b64encode(text.encode()).decode() if encoded else text}
    event["isBase64Encoded"] = encoded
    if rng.random() < 0.7:
        event["headers"] = {rng.choice(["content-type", "Content-Type"]): "application/json"}
    return event


def f_proxy_not_a_request(rng: random.Random) -> Any:
    text = not_a_request_json(rng)
    if rng.random() < 0.3:
        return {"body": base64.b64encode(text.encode()).decode(), "isBase64Encoded": True, "headers": None}
    return {"body": text, "headers": rng.choice([{}, None, {"content-type": "text/plain"}])}


def f_proxy_not_json(rng: random.Random) -> Any:
    kind = rng.randrange(4)
    if kind == 0:
        return {"body": "<" + weird_text(rng), "headers": {"content-type": rng.choice(["text/plain", "", "a/b"])}}
    if kind == 1:  # invalid UTF-8 behind valid base64
        raw = rng.choice([b"\xff\xfe\xfd", b'{"url": "\xff"}', b"\x80" * 10, b"\x00\xd8"])
        return {"body": base64.b64encode(raw).decode(), "isBase64Encoded": True}
    if kind == 2:  # bytes-ish text that is not JSON
        return {"body": rng.choice(["b'{}'", "b'\\x89PNG'", "\\x89PNG", "None", "nan", "{'url': 'x'}"])}
    return {"body": rng.choice(["", None, "   ", "{", '{"url": "https://e.com/a.jpg"', "\ud800"])}


def f_proxy_empty_or_broken_image(rng: random.Random) -> Any:
    event: dict[str, Any] = {"headers": {"content-type": rng.choice(IMAGE_TYPES)}}
    event["body"] = rng.choice(["", None, "\ud800", "x\udfffy"])
    event["isBase64Encoded"] = event["body"] in ("", None) and rng.random() < 0.5
    if rng.random() < 0.3:
        event["queryStringParameters"] = {"topk": "3"}
    return event


def f_oversize(rng: random.Random) -> Any:
    kind = rng.randrange(4)
    if kind == 0:
        return {"url": URL + "?" + "a" * MIB6}
    if kind == 1:
        return {"image_b64": "A" * (MIB6 + 4)}
    if kind == 2:
        return {"body": "A" * (MIB6 // 3 * 4 + 8), "isBase64Encoded": True, "headers": {"content-type": "image/png"}}
    return {"body": json.dumps({"url": URL, "pad": "x" * MIB6}), "headers": {}}


FAMILIES: list[tuple[Callable[[random.Random], Any], float]] = [
    (f_not_a_dict, 1),
    (f_direct_no_target, 1),
    (f_direct_bad_target, 1),
    (f_direct_bad_option, 1.5),
    (f_proxy_bad_map, 2),
    (f_proxy_bad_query_topk, 1.5),
    (f_proxy_bad_flag, 1),
    (f_proxy_bad_body_type, 1),
    (f_proxy_bad_base64, 1),
    (f_proxy_deep_json, 1.5),
    (f_proxy_not_a_request, 1.5),
    (f_proxy_not_json, 1.5),
    (f_proxy_empty_or_broken_image, 1),
    (f_oversize, 0.15),
]


def events(seed: int, count: int) -> Iterator[tuple[str, Any]]:
    rng = random.Random(seed)
    makers, weights = zip(*FAMILIES, strict=True)
    for _ in range(count):
        maker = rng.choices(makers, weights)[0]
        yield maker.__name__, maker(rng)


class ShortRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        return super().repr_int(x, level) if x.bit_length() < 64 else f"<int of {x.bit_length()} bits>"


SHORT = ShortRepr()
SHORT.maxlevel, SHORT.maxstring, SHORT.maxother = 4, 80, 80


def short(value: Any) -> str:
    """A bounded repr: the events nest thousands deep and hold huge strings and integers."""
    return SHORT.repr(value)


def check(module: ModuleType, runtime: Any, event: Any) -> str | None:
    """None when the answer is a well-formed 4xx; else what is wrong with it."""
    try:
        reply = module.handle(event, runtime, "ep")
    except Exception as err:  # RecursionError, AttributeError, ... are what this test is for
        return f"raised {type(err).__name__}: {str(err)[:100]}"
    if not isinstance(reply, dict) or set(reply) != {"statusCode", "headers", "body"}:
        return f"bad shape {short(reply)}"
    if reply["headers"] != {"Content-Type": "application/json"} or not 400 <= reply["statusCode"] < 500:
        return f"answered {reply['statusCode']} {short(reply['body'])}"
    body = json.loads(reply["body"])
    if set(body) != {"message"} or not isinstance(body["message"], str) or not body["message"]:
        return f"body {short(body)}"
    if len(reply["body"]) > 500 or "Traceback" in reply["body"]:
        return f"body too long or with a traceback: {short(reply['body'])}"
    return None


def test_hundreds_of_malformed_events_get_a_4xx_message(module: ModuleType, stubbed: tuple[Any, Stubber]) -> None:
    runtime, stubber = stubbed
    failures, seen = [], Counter[str]()
    for index, (family, event) in enumerate(events(SEED, CASES)):
        seen[family] += 1
        problem = check(module, runtime, event)
        if problem:
            failures.append(f"#{index} {family}: {problem}\n    event {short(event)}")
    stubber.assert_no_pending_responses()
    assert set(seen) == {maker.__name__ for maker, _ in FAMILIES}, seen  # every family was exercised
    assert not failures, f"{len(failures)} of {CASES} events (seed {SEED}) were not a 4xx:\n" + "\n".join(failures[:20])


def test_the_handler_entry_point_never_raises(
    module: ModuleType, stubbed: tuple[Any, Stubber], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lambda_handler` itself (what the runtime calls), with the module client never reached."""
    runtime, stubber = stubbed
    monkeypatch.setenv("ENDPOINT_NAME", "ep")
    monkeypatch.setattr(module, "RUNTIME", runtime)
    for _, event in events(SEED + 1, 150):
        reply = module.lambda_handler(event, None)
        assert 400 <= reply["statusCode"] < 500 and json.loads(reply["body"])["message"], short(event)
    stubber.assert_no_pending_responses()
