// fleetcore's runtime interface client for Node.js: loads the handler named by _HANDLER from
// LAMBDA_TASK_ROOT and serves invocations over the Lambda Runtime API (AWS_LAMBDA_RUNTIME_API),
// so `exports.handler = async (event, context) => ...`, callback-style handlers and ES modules
// written for AWS Lambda run unchanged.
"use strict";

// It speaks HTTP/1.1 itself over one keep-alive socket (TCP_NODELAY) instead of going through
// the `http` module, whose request and response objects, agent and parser cost more than a small
// handler; and it sends an invocation's result and the request for the next event together
// (HTTP pipelining: one write, answered in order), so an invocation costs the worker one write
// and the reads of two answers. Lambda semantics are those of the `http` version: output is
// written synchronously (stdout/stderr are files) before the result is sent.

const net = require("net");
const path = require("path");
const fs = require("fs");
const { pathToFileURL } = require("url");

const API = process.env.AWS_LAMBDA_RUNTIME_API;
const PREFIX = "/2018-06-01/runtime";
const NEXT = Buffer.from(`GET ${PREFIX}/invocation/next HTTP/1.1\r\nHost: ${API}\r\n\r\n`, "latin1");
const HEADER_END = Buffer.from("\r\n\r\n");

// One keep-alive HTTP/1.1 connection to the Runtime API.
class RuntimeApi {
  constructor() {
    const colon = API.lastIndexOf(":");
    this.host = API.slice(0, colon).replace(/^\[|\]$/g, "");
    this.port = Number(API.slice(colon + 1));
    this.sock = null;
    this.buffer = Buffer.alloc(0);
    // Answers awaited, in the order of their requests: {resolve, reject}.
    this.waiting = [];
  }

  connect() {
    this.close(new Error("reconnecting"));
    const sock = net.connect({ host: this.host, port: this.port });
    sock.setNoDelay(true);
    sock.on("data", (chunk) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
      this.parse();
    });
    const broken = (error) => {
      if (this.sock === sock) this.close(error || new Error("the Runtime API closed the connection"));
    };
    sock.on("error", broken);
    sock.on("close", () => broken());
    this.sock = sock;
  }

  close(error) {
    if (this.sock !== null) this.sock.destroy();
    this.sock = null;
    this.buffer = Buffer.alloc(0);
    const waiting = this.waiting;
    this.waiting = [];
    for (const w of waiting) w.reject(error);
  }

  // Sends the requests in one write and resolves to their answers, in order. A broken
  // connection is opened again once and the requests not answered yet are sent again.
  async exchange(requests) {
    const answers = [];
    for (let attempt = 0; ; attempt++) {
      try {
        if (this.sock === null) this.connect();
        const pending = requests.slice(answers.length).map(() => {
          const answer = new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
          // A broken connection rejects every waiter; only the first is awaited before a retry.
          answer.catch(() => {});
          return answer;
        });
        this.sock.write(requests.length - answers.length === 1 ? requests[answers.length] : Buffer.concat(requests.slice(answers.length)));
        for (const p of pending) answers.push(await p);
        return answers;
      } catch (error) {
        if (attempt) throw error;
        this.close(error);
      }
    }
  }

  // Hands every complete answer in the buffer to its waiter.
  parse() {
    for (;;) {
      const end = this.buffer.indexOf(HEADER_END);
      if (end < 0) return;
      const lines = this.buffer.toString("latin1", 0, end).split("\r\n");
      const status = Number(lines[0].split(" ", 3)[1]);
      const headers = {};
      for (let i = 1; i < lines.length; i++) {
        const colon = lines[i].indexOf(":");
        if (colon > 0) headers[lines[i].slice(0, colon).trim().toLowerCase()] = lines[i].slice(colon + 1).trim();
      }
      const start = end + 4;
      let body;
      let rest;
      if ((headers["transfer-encoding"] || "").toLowerCase() === "chunked") {
        const chunked = this.chunked(start);
        if (chunked === null) return;
        [body, rest] = chunked;
      } else {
        const length = Number(headers["content-length"] || 0);
        if (this.buffer.length < start + length) return;
        body = this.buffer.subarray(start, start + length);
        rest = start + length;
      }
      this.buffer = this.buffer.subarray(rest);
      const waiter = this.waiting.shift();
      const close = (headers.connection || "").toLowerCase() === "close";
      if (close) this.close(new Error("the Runtime API closed the connection"));
      if (waiter) waiter.resolve({ status, headers, body });
      if (close) return;
    }
  }

  // A chunked body starting at `at` of the buffer: [body, end], or null while incomplete.
  chunked(at) {
    const parts = [];
    for (;;) {
      const line = this.buffer.indexOf("\r\n", at);
      if (line < 0) return null;
      const size = parseInt(this.buffer.toString("latin1", at, line).split(";")[0], 16);
      at = line + 2;
      if (size === 0) {
        // Trailers, if any, then the empty line.
        for (;;) {
          const eol = this.buffer.indexOf("\r\n", at);
          if (eol < 0) return null;
          const empty = eol === at;
          at = eol + 2;
          if (empty) return [Buffer.concat(parts), at];
        }
      }
      if (this.buffer.length < at + size + 2) return null;
      parts.push(this.buffer.subarray(at, at + size));
      at += size + 2;
    }
  }
}

const api = new RuntimeApi();

// A POST request's bytes.
function post(route, body, headers) {
  const payload = Buffer.from(body, "utf8");
  let extra = "";
  for (const [name, value] of Object.entries(headers || {})) extra += `${name}: ${value}\r\n`;
  const head = `POST ${PREFIX}${route} HTTP/1.1\r\nHost: ${API}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${payload.length}\r\n${extra}\r\n`;
  return Buffer.concat([Buffer.from(head, "latin1"), payload]);
}

function errorDocument(error) {
  if (error instanceof Error) {
    return {
      errorType: error.name || "Error",
      errorMessage: error.message,
      trace: String(error.stack || "").split("\n"),
    };
  }
  return { errorType: typeof error, errorMessage: String(error), trace: [] };
}

async function failInit(errorType, message) {
  console.error(`[ERROR] ${errorType}: ${message}`);
  await api.exchange([
    post("/init/error", JSON.stringify({ errorType, errorMessage: message, trace: [] }), {
      "Lambda-Runtime-Function-Error-Type": errorType,
    }),
  ]);
  process.exit(1);
}

async function loadHandler() {
  const spec = process.env._HANDLER || "";
  const root = process.env.LAMBDA_TASK_ROOT || process.cwd();
  const dot = spec.lastIndexOf(".");
  if (dot <= 0) return failInit("Runtime.MalformedHandlerName", `Bad handler ${spec}`);
  const modulePath = spec.slice(0, dot);
  const name = spec.slice(dot + 1);
  const base = path.resolve(root, modulePath);
  const candidates = [".js", ".mjs", ".cjs"].map((ext) => base + ext).filter((p) => fs.existsSync(p));
  if (candidates.length === 0) {
    return failInit("Runtime.ImportModuleError", `Error: Cannot find module '${modulePath}'`);
  }
  let mod;
  try {
    mod = candidates[0].endsWith(".mjs") ? await import(pathToFileURL(candidates[0]).href) : require(candidates[0]);
  } catch (error) {
    if (error instanceof SyntaxError) {
      return failInit("Runtime.UserCodeSyntaxError", `${error.name}: ${error.message}`);
    }
    if (error && error.code === "ERR_REQUIRE_ESM") {
      mod = await import(pathToFileURL(candidates[0]).href);
    } else {
      return failInit("Runtime.ImportModuleError", `${error.name || "Error"}: ${error.message}`);
    }
  }
  const handler = mod[name] || (mod.default && mod.default[name]);
  if (typeof handler !== "function") {
    return failInit("Runtime.HandlerNotFound", `${modulePath}.${name} is undefined or not exported`);
  }
  return handler;
}

function contextFor(headers) {
  const deadline = Number(headers["lambda-runtime-deadline-ms"] || 0);
  let clientContext;
  try {
    clientContext = headers["lambda-runtime-client-context"] ? JSON.parse(headers["lambda-runtime-client-context"]) : undefined;
  } catch (_) {
    clientContext = undefined;
  }
  if (headers["lambda-runtime-trace-id"]) process.env._X_AMZN_TRACE_ID = headers["lambda-runtime-trace-id"];
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: headers["lambda-runtime-invoked-function-arn"],
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    awsRequestId: headers["lambda-runtime-aws-request-id"],
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    identity: undefined,
    clientContext,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}

// Runs the handler: a promise it returns, or the callback it calls, whichever comes first.
function run(handler, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const callback = (error, result) => {
      if (settled) return;
      settled = true;
      if (error !== undefined && error !== null) reject(error);
      else resolve(result);
    };
    context.done = callback;
    context.succeed = (result) => callback(null, result);
    context.fail = (error) => callback(error || new Error("handled"));
    try {
      const returned = handler(event, context, callback);
      if (returned && typeof returned.then === "function") {
        returned.then((r) => callback(null, r), (e) => callback(e === undefined ? new Error("undefined") : e));
      } else if (handler.length < 3) {
        callback(null, returned);
      }
    } catch (error) {
      callback(error);
    }
  });
}

async function main() {
  const handler = await loadHandler();
  // The result of the previous invocation, sent with the request for the next one.
  let result = null;
  for (;;) {
    const answers = await api.exchange(result === null ? [NEXT] : [result, NEXT]);
    const next = answers[answers.length - 1];
    if (next.status !== 200) process.exit(0);
    const requestId = next.headers["lambda-runtime-aws-request-id"];
    const context = contextFor(next.headers);
    try {
      const event = next.body.length ? JSON.parse(next.body.toString("utf8")) : null;
      const returned = await run(handler, event, context);
      const body = returned === undefined ? "null" : JSON.stringify(returned);
      result = post(`/invocation/${requestId}/response`, body === undefined ? "null" : body);
    } catch (error) {
      const document = errorDocument(error);
      console.error(`${new Date().toISOString()}\t${requestId}\tERROR\tInvoke Error \t${JSON.stringify(document)}`);
      result = post(`/invocation/${requestId}/error`, JSON.stringify(document), {
        "Lambda-Runtime-Function-Error-Type": document.errorType,
      });
    }
  }
}

process.on("unhandledRejection", (reason) => {
  console.error("Unhandled rejection:", reason);
  process.exit(128);
});

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
