import { constants } from 'node:http2';
import { Code, ConnectError } from '@connectrpc/connect';

/**
 * HTTP/2 error codes a client's RST_STREAM can carry, with the code the call is aborted with.
 * connect-node's adapter maps them so (`connectErrorFromH2ResetCode` in its node-error.ts, which
 * its entry point does not export); the fast path must abort its handlers' signals alike.
 */
const RESETS: Readonly<Record<number, readonly [name: string, code: Code]>> = {
  [constants.NGHTTP2_PROTOCOL_ERROR]: ['PROTOCOL_ERROR', Code.Internal],
  [constants.NGHTTP2_INTERNAL_ERROR]: ['INTERNAL_ERROR', Code.Internal],
  [constants.NGHTTP2_FLOW_CONTROL_ERROR]: ['FLOW_CONTROL_ERROR', Code.Internal],
  [constants.NGHTTP2_SETTINGS_TIMEOUT]: ['SETTINGS_TIMEOUT', Code.Internal],
  [constants.NGHTTP2_FRAME_SIZE_ERROR]: ['FRAME_SIZE_ERROR', Code.Internal],
  [constants.NGHTTP2_REFUSED_STREAM]: ['REFUSED_STREAM', Code.Unavailable],
  [constants.NGHTTP2_CANCEL]: ['CANCEL', Code.Canceled],
  [constants.NGHTTP2_COMPRESSION_ERROR]: ['COMPRESSION_ERROR', Code.Internal],
  [constants.NGHTTP2_CONNECT_ERROR]: ['CONNECT_ERROR', Code.Internal],
  [constants.NGHTTP2_ENHANCE_YOUR_CALM]: ['ENHANCE_YOUR_CALM', Code.ResourceExhausted],
  [constants.NGHTTP2_INADEQUATE_SECURITY]: ['INADEQUATE_SECURITY', Code.PermissionDenied],
  [constants.NGHTTP2_HTTP_1_1_REQUIRED]: ['HTTP_1_1_REQUIRED', Code.PermissionDenied],
};

/**
 * Why a stream the client reset ended the call, with Connect's message. Undefined for
 * NO_ERROR, STREAM_CLOSED (left out as gRPC's PROTOCOL-HTTP2.md says) and codes HTTP/2 does
 * not define: Connect then aborts the signal without a reason.
 */
export function resetError(rstCode: number | undefined): ConnectError | undefined {
  const reset = rstCode === undefined ? undefined : RESETS[rstCode];
  if (!reset || rstCode === undefined) return undefined;
  const [name, code] = reset;
  return new ConnectError(
    `http/2 stream closed with error code ${name} (0x${rstCode.toString(16)})`,
    code,
  );
}

/**
 * The error the rest of a request body fails with when the client reset the stream before it was
 * read to the end: CANCELLED whatever the reset's code, as the call's telemetry has it.
 */
export function resetBeforeEnd(rstCode: number | undefined): ConnectError {
  const reset = resetError(rstCode);
  const why = reset ? ` (${reset.rawMessage})` : '';
  return new ConnectError(
    `the client reset the stream before its request was read${why}`,
    Code.Canceled,
  );
}
