// The admin JSON API (voxgate/server/admin_api): every call with `Authorization: Bearer TOKEN`.
// Failures become an ApiError whose `code` is the API's (unauthorized, not_found, conflict,
// bad_request, unavailable) or "unreachable" when the server did not answer at all.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class AdminApi {
  constructor(token) {
    this.token = token;
  }

  get(path, params = {}) {
    const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== ""));
    const suffix = query.toString() ? `?${query}` : "";
    return this.request("GET", `${path}${suffix}`);
  }

  send(method, path, body) {
    return this.request(method, path, body);
  }

  async request(method, path, body) {
    // Relative to the page: works at /admin and behind a proxy under a sub-path.
    const url = new URL(`api/admin/${path}`, window.location.href);
    const init = { method, headers: { Authorization: `Bearer ${this.token}` }, cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch {
      throw new ApiError(0, "unreachable", "The server is not answering: it may have stopped, or the network is down.");
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = data && data.error ? data.error : {};
      throw new ApiError(response.status, error.code || `http_${response.status}`, error.message || `HTTP ${response.status}`);
    }
    return data;
  }
}
