/** How much of a caller's own text an error message repeats: enough to recognise it. */
const ECHOED_CHARACTERS = 200;

/**
 * `text` as an error message may repeat it: cut to 200 characters, so that a caller's long input
 * cannot make trailers no client reads (gRPC suggests clients take 8 KiB of them), and never
 * inside a surrogate pair, which `grpc-message`'s percent-encoding cannot take.
 */
export function echoed(text: string): string {
  return clipped(text, ECHOED_CHARACTERS);
}

/** `text` cut to `max` characters and marked with `...`, never inside a surrogate pair. */
export function clipped(text: string, max: number): string {
  if (text.length <= max) return text;
  const cut = text.slice(0, max);
  const last = cut.charCodeAt(cut.length - 1);
  return `${last >= 0xd800 && last <= 0xdbff ? cut.slice(0, -1) : cut}...`;
}

/** What a call to a path no RPC is registered for is told, and its span and log line say. */
export function unknownMethodMessage(path: string): string {
  return `unknown method ${echoed(path)}`;
}
