"""fleetcore's runtime interface client for Python: loads the handler named by _HANDLER from
LAMBDA_TASK_ROOT and serves invocations over the Lambda Runtime API (AWS_LAMBDA_RUNTIME_API),
so a handler written for AWS Lambda, `def handler(event, context)`, runs unchanged."""

import http.client
import importlib
import json
import os
import sys
import time
import traceback

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
PREFIX = "/2018-06-01/runtime"


class Connection:
    """One keep-alive HTTP connection to the Runtime API."""

    def __init__(self):
        self.conn = http.client.HTTPConnection(API)

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            try:
                self.conn.request(method, PREFIX + path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                return response, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(API)
                if attempt:
                    raise


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
    api.request("POST", "/init/error",
                to_json({"errorMessage": message, "errorType": error_type, "stackTrace": []}),
                {"Lambda-Runtime-Function-Error-Type": error_type})
    sys.exit(1)


class Context:
    """The context object of an invocation, with Lambda's documented fields."""

    def __init__(self, headers):
        self.aws_request_id = headers.get("Lambda-Runtime-Aws-Request-Id", "")
        self.invoked_function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn", "")
        self._deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms", "0") or 0)
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        client_context = headers.get("Lambda-Runtime-Client-Context")
        if client_context:
            try:
                self.client_context = json.loads(client_context)
            except ValueError:
                self.client_context = None
        trace = headers.get("Lambda-Runtime-Trace-Id")
        if trace:
            os.environ["_X_AMZN_TRACE_ID"] = trace

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))


def main():
    task_root = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())
    sys.path.insert(0, task_root)
    api = Connection()
    handler = load_handler(api)
    while True:
        response, body = api.request("GET", "/invocation/next")
        if response.status != 200:
            sys.exit(0)
        request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
        context = Context({
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Invoked-Function-Arn": response.getheader("Lambda-Runtime-Invoked-Function-Arn"),
            "Lambda-Runtime-Deadline-Ms": response.getheader("Lambda-Runtime-Deadline-Ms"),
            "Lambda-Runtime-Client-Context": response.getheader("Lambda-Runtime-Client-Context"),
            "Lambda-Runtime-Trace-Id": response.getheader("Lambda-Runtime-Trace-Id"),
        })
        try:
            event = json.loads(body) if body else None
            result = to_json(handler(event, context))
        except Exception as error:
            document = error_document(error)
            document["requestId"] = request_id
            print(f"[ERROR] {document['errorType']}: {document['errorMessage']}", file=sys.stderr)
            traceback.print_exc()
            flush()
            api.request("POST", f"/invocation/{request_id}/error", to_json(document),
                        {"Lambda-Runtime-Function-Error-Type": document["errorType"]})
            continue
        flush()
        api.request("POST", f"/invocation/{request_id}/response", result)


if __name__ == "__main__":
    main()
