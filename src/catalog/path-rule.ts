// The one path rule of every output (built-in proxy, nginx and HAProxy templates): a request
// path that a backend could resolve to another place than the proxy routed it to is refused
// with 400, so the route is chosen on exactly the path the instance receives.
//
// Refused (in the path, i.e. the request target before `?`, as received):
//   - an empty segment (`//`);
//   - a dot segment, `.` or `..`, also with encoded blanks or control bytes before or after it
//     (`..%20`, `%20..`, `..%0d`, `.%0a`: %00-%20, %7f, and UTF-8 NEL/NBSP %c2%85 and %c2%a0),
//     which trimming backends (Java's trim, Python's strip) turn into a dot segment;
//   - a `;` or an encoded one (`%3b`): servlet containers and others strip `;params` from each
//     segment, so `/admin;x/users` would be routed as one path and served as another (nginx and
//     HAProxy match locations with the `;` in place, so stripping it cannot be made to agree);
//   - an encoded dot, slash, backslash or NUL (`%2e`, `%2f`, `%5c`, `%00`, any case), a literal
//     backslash, or a `%` not followed by two hex digits;
//   - an overlong UTF-8 encoding (`%c0`/`%c1` lead bytes such as `%c0%ae`, and `%e0%80`-`%e0%9f`,
//     `%f0%80`-`%f0%8f`), which lenient decoders turn into `.` or `/`.
// Then the path decoded once (nginx's $uri, HAProxy's `path,url_dec`, routingPath here) must not
// hold what a backend that decodes a second time would turn into one of the above: an encoded dot,
// slash, backslash, NUL, `;` or overlong lead, a dot segment with encoded blanks, or an encoded
// `%` in front of one of those or of another encoded `%`. However it is spelled (`%252e`,
// `%25%32%65`, `%252%65`, `%2520..`), a double or triple encoding of a refused thing is refused;
// a `%25` that decodes to a plain `%` (`/files/100%25`, `/files/100%2525`) is not.
// Everything else routes on its percent-decoded form (nginx matches locations on the decoded
// URI, HAProxy through `path,url_dec`) and is forwarded exactly as received: after the refusals,
// decoding cannot change where one segment ends and the next begins.

/** An encoded blank or control byte a backend may trim from a segment (%00-%20, %7f, UTF-8 NEL and NBSP). */
const BLANK = String.raw`%(?:[01][0-9A-Fa-f]|20|7[fF]|[cC]2%(?:85|[aA]0))`;
/** Encodings that are refused: dot, slash, backslash, NUL, `;`, overlong UTF-8 leads. */
const ENCODED = String.raw`2[eEfF]|5[cC]|00|3[bB]|[cC][01]|[eE]0%[89]|[fF]0%8`;
/** A `%25` (encoded `%`) in front of a refused encoding, or of another `%25`. */
const DOUBLE = String.raw`%25(?:25|2[eEfF]|5[cC]|00|3[bB]|[cC][01])`;

/** The refusal as one PCRE/JS pattern over the path alone (HAProxy's `path`). */
export const REFUSED_PATH_SOURCE = String.raw`#|//|/(?:${BLANK})*\.\.?(?:${BLANK})*(?:/|$)|;|%(?:${ENCODED})|\\|%(?![0-9A-Fa-f]{2})`;

/**
 * The refusal over the path decoded once (nginx's `$uri`, HAProxy's `path,url_dec`): what a second
 * (or third) decoding would turn into a refused path.
 */
export const REFUSED_DECODED_SOURCE = String.raw`/(?:${BLANK})*\.\.?(?:${BLANK})*(?:/|$)|${DOUBLE}|%(?:${ENCODED})`;

/**
 * The same over a whole request target with its query (nginx's `$request_uri`), which must also
 * start with `/` (nginx leaves `?q=1` of `GET http://host?q=1`, which HAProxy and the built-in
 * proxy refuse).
 */
export const REFUSED_TARGET_SOURCE = String.raw`#|^(?!/)|^[^?]*?(?://|/(?:${BLANK})*\.\.?(?:${BLANK})*(?:[/?]|$)|;|%(?:${ENCODED})|\\|%(?![0-9A-Fa-f]{2}))`;

const REFUSED_PATH = new RegExp(REFUSED_PATH_SOURCE);
const REFUSED_DECODED = new RegExp(REFUSED_DECODED_SOURCE);

/** Why a path (without its query) is refused, or undefined when it may be routed. */
export function refusedPath(path: string): string | undefined {
  if (path.charCodeAt(0) !== 47 /* / */) return 'does not start with /';
  const m = REFUSED_PATH.exec(path);
  if (!m) return path.includes('%25') && REFUSED_DECODED.test(routingPath(path)) ? 'has a double percent-encoding' : undefined;
  const hit = m[0];
  if (hit === '#') return 'has a fragment (#), which nginx would cut the path at';
  if (hit === '//') return 'has an empty segment (//)';
  if (hit.charCodeAt(0) === 47 /* / */) return 'has a dot segment';
  if (hit === '\\') return 'has a backslash';
  if (hit === '%') return 'has a malformed percent-encoding';
  if (hit === ';' || hit.toLowerCase() === '%3b') return 'has a ; (path parameters are not routed)';
  if (hit.length > 3 || /^%[cC][01]$/.test(hit)) return 'has an overlong UTF-8 encoding';
  return `has an encoded ${hit.toLowerCase() === '%2f' ? 'slash' : hit.toLowerCase() === '%2e' ? 'dot' : hit.toLowerCase() === '%5c' ? 'backslash' : 'NUL'}`;
}

/** The path routes are matched against: percent-decoded byte by byte (as nginx does), no UTF-8 step. */
export function routingPath(path: string): string {
  if (!path.includes('%')) return path;
  return path.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}
