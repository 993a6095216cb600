// An AssemblyScript filter on @solo-io/proxy-runtime: request and response headers, a local
// response, logging, a counter and an HTTP callout that decides whether the request goes on.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context,
  send_local_response, log, LogLevelValues, Counter, Headers, HeaderPair, GrpcStatusValues,
  continue_request,
} from "@solo-io/proxy-runtime";

class AsRoot extends RootContext {
  requests: Counter;
  constructor(context_id: u32) {
    super(context_id);
    this.requests = new Counter("as_requests");
  }
  createContext(context_id: u32): Context {
    return new AsFilter(context_id, this);
  }
}

function header(name: string, value: string): HeaderPair {
  return new HeaderPair(String.UTF8.encode(name), String.UTF8.encode(value));
}

class AsFilter extends Context {
  root: AsRoot;
  constructor(context_id: u32, root_context: AsRoot) {
    super(context_id, root_context);
    this.root = root_context;
  }

  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    this.root.requests.increment(1);
    const mode = stream_context.headers.request.get("x-as");
    log(LogLevelValues.info, "as request mode=" + mode + " config=" + this.root.getConfiguration());
    stream_context.headers.request.add("x-as-seen", "1");
    if (mode == "deny") {
      send_local_response(403, "as_denied", String.UTF8.encode("denied by as"), [header("x-as-local", "1")],
                          GrpcStatusValues.Unknown);
      return FilterHeadersStatusValues.StopIteration;
    }
    if (mode == "call") {
      const call: Headers = [header(":method", "GET"), header(":path", "/check"), header(":authority", "auth"),
                            header("x-user", stream_context.headers.request.get("x-user"))];
      this.root.httpCall("auth", call, new ArrayBuffer(0), [], 1000, this,
        (origin: Context, headers: u32, body_size: usize, trailers: u32): void => {
          const status = stream_context.headers.http_callback.get(":status");
          log(LogLevelValues.info, "as callout status=" + status + " body=" + body_size.toString());
          if (status == "200") {
            stream_context.headers.request.add("x-as-auth", status);
            continue_request();
          } else {
            send_local_response(401, "as_unauthorized", String.UTF8.encode("no"), [], GrpcStatusValues.Unknown);
          }
        });
      return FilterHeadersStatusValues.StopIteration;
    }
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-as-response", "1");
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new AsRoot(context_id); }, "as-filter");
