"""The two AWS APIs the preflight reads that moto does not serve, over their real wire protocols.

moto answers Service Quotas only for `vpc` and has no `iam:SimulatePrincipalPolicy` (see
../shared/AWS_LOCAL.md). This server takes the `service-quotas` endpoint (JSON 1.1) and the `iam`
endpoint (query protocol): SimulatePrincipalPolicy it answers itself, every other IAM request
goes on to moto unchanged. Production code is untouched: boto3 honours AWS_ENDPOINT_URL_IAM and
AWS_ENDPOINT_URL_SERVICE_QUOTAS as it honours AWS_ENDPOINT_URL.

State a test sets: `applied` (a quota's applied value), `defaults` (the region's catalogue; every
quota of `dogbreed/aws/quotas.json` at DEFAULT_VALUE unless a test changes it), `denied` (actions
the simulator denies, with the decision), `refused` (operations answered AccessDenied).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

from dogbreed.aws.quotas import TABLE

DEFAULT_VALUE = 100.0  # generous: flows pass unless a test lowers a quota
TARGET_PREFIX = "ServiceQuotasV20190624."
IAM_NS = "https://iam.amazonaws.com/doc/2010-05-08/"


class Gaps:
    def __init__(self, moto_url: str) -> None:
        self.moto_url = moto_url
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.applied: dict[tuple[str, str], float] = {}
            self.defaults: dict[tuple[str, str], tuple[str, float]] = {
                (service, code): (name, DEFAULT_VALUE)
                for service, codes in TABLE["codes"].items()
                for name, code in codes.items()
            }
            self.denied: dict[str, str] = {}
            self.refused: set[str] = set()
            self.simulated: list[dict[str, Any]] = []

    def quota(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if operation in self.refused:
            return 400, {"__type": "AccessDeniedException", "message": "not authorized"}
        if operation == "ListAWSDefaultServiceQuotas":
            quotas = [self._quota(s, c, v) for (s, c), (_, v) in self.defaults.items() if s == body["ServiceCode"]]
            return 200, {"Quotas": quotas}
        key = (body["ServiceCode"], body["QuotaCode"])
        if key not in self.defaults or (operation == "GetServiceQuota" and key not in self.applied):
            return 400, {"__type": "NoSuchResourceException", "message": "The specified resource does not exist."}
        value = self.applied[key] if operation == "GetServiceQuota" else self.defaults[key][1]
        return 200, {"Quota": self._quota(*key, value)}

    def _quota(self, service: str, code: str, value: float) -> dict[str, Any]:
        name = self.defaults[(service, code)][0]
        return {"ServiceCode": service, "QuotaCode": code, "QuotaName": name, "Value": value, "Adjustable": True}

    def simulate(self, form: dict[str, list[str]]) -> bytes:
        action, resource = form["ActionNames.member.1"][0], form.get("ResourceArns.member.1", ["*"])[0]
        self.simulated.append({"source": form["PolicySourceArn"][0], "action": action, "resource": resource})
        decision = self.denied.get(action, "allowed")
        return (
            f'<SimulatePrincipalPolicyResponse xmlns="{IAM_NS}"><SimulatePrincipalPolicyResult>'
            f"<IsTruncated>false</IsTruncated><EvaluationResults><member>"
            f"<EvalActionName>{escape(action)}</EvalActionName><EvalResourceName>{escape(resource)}</EvalResourceName>"
            f"<EvalDecision>{decision}</EvalDecision><MatchedStatements/><MissingContextValues/>"
            f"</member></EvaluationResults></SimulatePrincipalPolicyResult>"
            f"<ResponseMetadata><RequestId>gaps</RequestId></ResponseMetadata></SimulatePrincipalPolicyResponse>"
        ).encode()


class Handler(BaseHTTPRequestHandler):
    server: GapsServer

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        gaps = self.server.gaps
        target = self.headers.get("X-Amz-Target", "")
        if target.startswith(TARGET_PREFIX):
            with gaps.lock:
                status, answer = gaps.quota(target.removeprefix(TARGET_PREFIX), json.loads(body or b"{}"))
            self.reply(status, json.dumps(answer).encode(), "application/x-amz-json-1.1")
            return
        form = urllib.parse.parse_qs(body.decode())
        if form.get("Action") == ["SimulatePrincipalPolicy"]:
            with gaps.lock:
                answer = gaps.simulate(form)
            self.reply(200, answer, "text/xml")
            return
        self.forward(body)

    def forward(self, body: bytes) -> None:
        skip = {"host", "content-length", "connection"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        request = urllib.request.Request(self.server.gaps.moto_url + self.path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, answer, kind = response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            status, answer, kind = err.code, err.read(), err.headers.get("Content-Type", "")
        self.reply(status, answer, kind)

    def reply(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class GapsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, gaps: Gaps) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.gaps = gaps

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"
