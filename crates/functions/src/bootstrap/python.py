"""fleetcore's runtime interface client for Python: loads the handler named by _HANDLER from
LAMBDA_TASK_ROOT and serves invocations over the Lambda Runtime API (AWS_LAMBDA_RUNTIME_API),
so a handler written for AWS Lambda, `def handler(event, context)`, runs unchanged.

It speaks HTTP/1.1 itself over one keep-alive socket instead of going through http.client,
whose header parsing costs about as much as a small handler; and it sends an invocation's
result and the request for the next event together (HTTP pipelining: one write, answered in
order), so an invocation costs the worker one write and the reads of two answers."""

import importlib
import json
import os
import socket
import sys
import time
import traceback

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
PREFIX = "/2018-06-01/runtime"
NEXT = f"GET {PREFIX}/invocation/next HTTP/1.1\r\nHost: {API}\r\n\r\n".encode()


class Response:
    """One HTTP answer: its status, headers (lower-case names) and body."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body


class RuntimeApi:
    """One keep-alive HTTP/1.1 connection to the Runtime API."""

    def __init__(self):
        host, _, port = API.rpartition(":")
        self.address = (host.strip("[]"), int(port))
        self.sock = None
        self.buffer = bytearray()

    def connect(self):
        self.close()
        self.sock = socket.create_connection(self.address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.buffer = bytearray()

    def exchange(self, requests):
        """Sends the requests in one write and returns their answers, in order. A broken
        connection is opened again once and the requests not answered yet are sent again."""
        answers = []
        for attempt in (0, 1):
            try:
                if self.sock is None:
                    self.connect()
                self.sock.sendall(b"".join(requests[len(answers):]))
                while len(answers) < len(requests):
                    answers.append(self.read_response())
                return answers
            except (OSError, ValueError, IndexError):
                self.close()
                if attempt:
                    raise

    def fill(self):
        if self.sock is None:
            raise ConnectionError("the Runtime API closed the connection")
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the Runtime API closed the connection")
        self.buffer += chunk

    def read_response(self):
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            self.fill()
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[:end + 4]
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = self.read_chunked()
        else:
            body = self.read_exactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, headers, body)

    def read_exactly(self, length):
        while len(self.buffer) < length:
            self.fill()
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body

    def read_chunked(self):
        body = bytearray()
        while True:
            while (end := self.buffer.find(b"\r\n")) < 0:
                self.fill()
            size = int(bytes(self.buffer[:end]).split(b";")[0], 16)
            del self.buffer[:end + 2]
            if size == 0:
                while (end := self.buffer.find(b"\r\n")) != 0:
                    if end > 0:
                        del self.buffer[:end + 2]
                    else:
                        self.fill()
                del self.buffer[:2]
                return bytes(body)
            body += self.read_exactly(size + 2)[:size]


def post(path, body, headers=None):
    """A POST request's bytes."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return (f"POST {PREFIX}{path} HTTP/1.1\r\nHost: {API}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def error_document(error, error_type=None):
    return {
        "errorMessage": str(error),
        "errorType": error_type or type(error).__name__,
        "requestId": "",
        "stackTrace": traceback.format_list(traceback.extract_tb(error.__traceback__)),
    }


def to_json(document):
    return json.dumps(document, default=str).encode()


def load_handler(api):
    spec = os.environ.get("_HANDLER", "")
    try:
        module_name, function_name = spec.rsplit(".", 1)
    except ValueError:
        return fail_init(api, "Runtime.MalformedHandlerName",
                         f"Bad handler '{spec}': not enough values to unpack (expected 2, got 1)")
    module_name = module_name.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as error:
        return fail_init(api, "Runtime.UserCodeSyntaxError",
                         f"Syntax error in module '{module_name}': {error}")
    except ImportError as error:
        return fail_init(api, "Runtime.ImportModuleError",
                         f"Unable to import module '{module_name}': {error}")
    except Exception as error:
        traceback.print_exc()
        return fail_init(api, "Runtime.ImportModuleError",
                         f"Unable to import module '{module_name}': {error}")
    handler = getattr(module, function_name, None)
    if handler is None:
        return fail_init(api, "Runtime.HandlerNotFound",
                         f"Handler '{function_name}' missing on module '{module_name}'")
    return handler


def fail_init(api, error_type, message):
    print(f"[ERROR] {error_type}: {message}", file=sys.stderr)
    flush()
    api.exchange([post("/init/error",
                       to_json({"errorMessage": message, "errorType": error_type, "stackTrace": []}),
                       {"Lambda-Runtime-Function-Error-Type": error_type})])
    sys.exit(1)


FUNCTION_NAME = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
FUNCTION_VERSION = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
MEMORY_LIMIT_IN_MB = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
LOG_GROUP_NAME = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
LOG_STREAM_NAME = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")


class Context:
    """The context object of an invocation, with Lambda's documented fields."""

    def __init__(self, headers):
        self.aws_request_id = headers.get("lambda-runtime-aws-request-id", "")
        self.invoked_function_arn = headers.get("lambda-runtime-invoked-function-arn", "")
        self._deadline_ms = int(headers.get("lambda-runtime-deadline-ms", "0") or 0)
        self.function_name = FUNCTION_NAME
        self.function_version = FUNCTION_VERSION
        self.memory_limit_in_mb = MEMORY_LIMIT_IN_MB
        self.log_group_name = LOG_GROUP_NAME
        self.log_stream_name = LOG_STREAM_NAME
        self.identity = None
        self.client_context = None
        client_context = headers.get("lambda-runtime-client-context")
        if client_context:
            try:
                self.client_context = json.loads(client_context)
            except ValueError:
                self.client_context = None
        trace = headers.get("lambda-runtime-trace-id")
        if trace:
            os.environ["_X_AMZN_TRACE_ID"] = trace

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))


def main():
    task_root = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())
    sys.path.insert(0, task_root)
    api = RuntimeApi()
    handler = load_handler(api)
    # The result of the previous invocation, sent with the request for the next one.
    result = None
    while True:
        answers = api.exchange([result, NEXT] if result else [NEXT])
        event = answers[-1]
        if event.status != 200:
            sys.exit(0)
        request_id = event.headers.get("lambda-runtime-aws-request-id", "")
        context = Context(event.headers)
        try:
            result = post(f"/invocation/{request_id}/response",
                          to_json(handler(json.loads(event.body) if event.body else None, context)))
        except Exception as error:
            document = error_document(error)
            document["requestId"] = request_id
            print(f"[ERROR] {document['errorType']}: {document['errorMessage']}", file=sys.stderr)
            traceback.print_exc()
            result = post(f"/invocation/{request_id}/error", to_json(document),
                          {"Lambda-Runtime-Function-Error-Type": document["errorType"]})
        flush()


if __name__ == "__main__":
    main()
