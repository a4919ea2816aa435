"""The AWS APIs the flows call that moto does not serve, over their real wire protocols.

moto answers Service Quotas only for `vpc`, has no `iam:SimulatePrincipalPolicy` and no Lambda
provisioned concurrency (see ../shared/AWS_LOCAL.md). This server takes the `service-quotas`
endpoint (JSON 1.1), the `iam` endpoint (query protocol) and the `lambda` endpoint (REST JSON):
those operations it answers itself, every other request goes on to moto unchanged. Production code
is untouched: boto3 honours AWS_ENDPOINT_URL_<SERVICE> as it honours AWS_ENDPOINT_URL.

State a test sets: `applied` (a quota's applied value), `defaults` (the region's catalogue; every
quota of `dogbreed/aws/quotas.json` at DEFAULT_VALUE unless a test changes it), `denied` (actions
the simulator denies, with the decision), `refused` (operations answered AccessDenied).
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import urllib.parse
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
            self.provisioned: dict[str, int] = {}  # "function:qualifier" -> executions

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

    def provisioned_concurrency(self, method: str, function: str, qualifier: str, body: bytes) -> tuple[int, bytes]:
        key = f"{function}:{qualifier}"
        if method == "PUT":
            self.provisioned[key] = int(json.loads(body)["ProvisionedConcurrentExecutions"])
        elif method == "DELETE":
            self.provisioned.pop(key, None)
            return 204, b""
        if key not in self.provisioned:
            return 404, json.dumps({"Type": "User", "message": f"No Provisioned Concurrency Config for {key}"}).encode()
        count = self.provisioned[key]
        answer = {"RequestedProvisionedConcurrentExecutions": count, "AllocatedProvisionedConcurrentExecutions": count,
                  "AvailableProvisionedConcurrentExecutions": count, "Status": "READY"}  # fmt: skip
        return (202 if method == "PUT" else 200), json.dumps(answer).encode()


PROVISIONED = re.compile(r"^/2019-09-30/functions/([^/]+)/provisioned-concurrency\?Qualifier=([^&]+)")


class Handler(BaseHTTPRequestHandler):
    server: GapsServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.route("GET")

    def do_PUT(self) -> None:
        self.route("PUT")

    def do_DELETE(self) -> None:
        self.route("DELETE")

    def do_POST(self) -> None:
        self.route("POST")

    def route(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        gaps = self.server.gaps
        provisioned = PROVISIONED.match(self.path)
        target = self.headers.get("X-Amz-Target", "")
        form = urllib.parse.parse_qs(body.decode()) if method == "POST" and not target else {}
        if provisioned:
            function, qualifier = (urllib.parse.unquote(part) for part in provisioned.groups())
            with gaps.lock:
                status, answer = gaps.provisioned_concurrency(method, function, qualifier, body)
            error = {"x-amzn-ErrorType": "ProvisionedConcurrencyConfigNotFoundException"} if status == 404 else {}
            self.reply(status, answer, "application/json", error)
        elif target.startswith(TARGET_PREFIX):
            with gaps.lock:
                status, quota = gaps.quota(target.removeprefix(TARGET_PREFIX), json.loads(body or b"{}"))
            self.reply(status, json.dumps(quota).encode(), "application/x-amz-json-1.1")
        elif form.get("Action") == ["SimulatePrincipalPolicy"]:
            with gaps.lock:
                answer = gaps.simulate(form)
            self.reply(200, answer, "text/xml")
        else:
            self.forward(body, method)

    def forward(self, body: bytes, method: str) -> None:
        """The request to moto byte for byte (http.client: urllib would add a form Content-Type moto routes on)."""
        skip = {"host", "connection"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        target = urllib.parse.urlsplit(self.server.gaps.moto_url)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
        try:
            connection.request(method, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            status, answer, passed = response.status, response.read(), response.headers
        finally:
            connection.close()
        dropped = ("content-length", "transfer-encoding", "connection", "content-type", "server", "date")
        kept = {k: v for k, v in passed.items() if k.lower() not in dropped}
        self.reply(status, answer, passed.get("Content-Type", ""), kept)

    def reply(self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
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
