import { create, type DescFile, toBinary } from '@bufbuild/protobuf';
import {
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
  FileDescriptorProtoSchema,
} from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, type ConnectRouter } from '@connectrpc/connect';
import * as v1 from '../gen/grpc/reflection/v1/reflection_pb.js';
import * as v1alpha from '../gen/grpc/reflection/v1alpha/reflection_pb.js';

/** The request shape shared by grpc.reflection.v1 and v1alpha. */
type ReflectionRequest = {
  messageRequest:
    | {
        case: 'fileByFilename' | 'fileContainingSymbol' | 'allExtensionNumbersOfType';
        value: string;
      }
    | {
        case: 'fileContainingExtension';
        value: { containingType: string; extensionNumber: number };
      }
    | { case: 'listServices'; value: string }
    | { case: undefined; value?: undefined };
};

/** The response oneof shared by grpc.reflection.v1 and v1alpha. */
type ReflectionAnswer =
  | { case: 'fileDescriptorResponse'; value: { fileDescriptorProto: Uint8Array[] } }
  | {
      case: 'allExtensionNumbersResponse';
      value: { baseTypeName: string; extensionNumber: number[] };
    }
  | { case: 'listServicesResponse'; value: { service: { name: string }[] } }
  | { case: 'errorResponse'; value: { errorCode: number; errorMessage: string } };

type ReflectionIndex = {
  services: string[];
  files: Map<string, DescFile>;
  symbols: Map<string, DescFile>;
  messages: Set<string>;
  /** extendee type name → extension number → file */
  extensions: Map<string, Map<number, DescFile>>;
};

/**
 * Registers gRPC server reflection, `grpc.reflection.v1` and the older `v1alpha`, for every
 * service registered on `router` (before or after this call) and their imports. `extraFiles` adds
 * files no service imports, for example types packed into `google.protobuf.Any`.
 */
export function registerReflection(
  router: ConnectRouter,
  extraFiles: readonly DescFile[] = [],
): void {
  let index: ReflectionIndex | undefined;
  let indexedHandlers = -1;
  const currentIndex = (): ReflectionIndex => {
    if (index === undefined || indexedHandlers !== router.handlers.length) {
      index = buildIndex(router, extraFiles);
      indexedHandlers = router.handlers.length;
    }
    return index;
  };

  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) {
        yield create(v1.ServerReflectionResponseSchema, {
          validHost: request.host,
          originalRequest: request,
          messageResponse: answer(currentIndex(), request),
        });
      }
    },
  });
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) {
        yield create(v1alpha.ServerReflectionResponseSchema, {
          validHost: request.host,
          originalRequest: request,
          messageResponse: answer(currentIndex(), request),
        });
      }
    },
  });
}

/**
 * Answers reflection calls with UNIMPLEMENTED saying it is turned off, where a server without it
 * answers that a method is unknown: what to do instead reaches the person at the tool, and no
 * tool's call is logged as a client ahead of its server.
 */
export function registerReflectionOff(router: ConnectRouter): void {
  const off = (): never => {
    throw new ConnectError(REFLECTION_OFF, Code.Unimplemented);
  };
  router.service(v1.ServerReflection, { serverReflectionInfo: off });
  router.service(v1alpha.ServerReflection, { serverReflectionInfo: off });
}

const REFLECTION_OFF =
  'server reflection is turned off on this server (GRPC_REFLECTION=false): give your client the schema instead, e.g. buf curl --schema proto';

function answer(index: ReflectionIndex, request: ReflectionRequest): ReflectionAnswer {
  const { messageRequest } = request;
  switch (messageRequest.case) {
    case 'listServices':
      return {
        case: 'listServicesResponse',
        value: { service: index.services.map((name) => ({ name })) },
      };
    case 'fileByFilename':
      return fileAnswer(index.files.get(messageRequest.value), `file "${messageRequest.value}"`);
    case 'fileContainingSymbol':
      return fileAnswer(
        index.symbols.get(messageRequest.value),
        `symbol "${messageRequest.value}"`,
      );
    case 'fileContainingExtension': {
      const { containingType, extensionNumber } = messageRequest.value;
      return fileAnswer(
        index.extensions.get(containingType)?.get(extensionNumber),
        `extension ${extensionNumber} of "${containingType}"`,
      );
    }
    case 'allExtensionNumbersOfType': {
      const typeName = messageRequest.value;
      if (!index.messages.has(typeName)) return notFound(`message type "${typeName}"`);
      const numbers = index.extensions.get(typeName)?.keys() ?? [];
      return {
        case: 'allExtensionNumbersResponse',
        value: { baseTypeName: typeName, extensionNumber: [...numbers] },
      };
    }
    case undefined:
      return {
        case: 'errorResponse',
        value: {
          errorCode: Code.Unimplemented,
          errorMessage: 'unsupported reflection request: set one field of message_request',
        },
      };
  }
}

/** The file first, then its transitive imports, as serialized FileDescriptorProtos. */
function fileAnswer(file: DescFile | undefined, what: string): ReflectionAnswer {
  if (file === undefined) return notFound(what);
  const seen = new Set<DescFile>([file]);
  for (const f of seen) for (const dependency of f.dependencies) seen.add(dependency);
  return {
    case: 'fileDescriptorResponse',
    value: { fileDescriptorProto: [...seen].map(serializedFile) },
  };
}

function notFound(what: string): ReflectionAnswer {
  return {
    case: 'errorResponse',
    value: { errorCode: Code.NotFound, errorMessage: `${what} not found on this server` },
  };
}

const serializedFiles = new WeakMap<DescFile, Uint8Array>();

function serializedFile(file: DescFile): Uint8Array {
  let bytes = serializedFiles.get(file);
  if (bytes === undefined) {
    bytes = toBinary(FileDescriptorProtoSchema, file.proto);
    serializedFiles.set(file, bytes);
  }
  return bytes;
}

function buildIndex(router: ConnectRouter, extraFiles: readonly DescFile[]): ReflectionIndex {
  const index: ReflectionIndex = {
    services: [...new Set(router.handlers.map((handler) => handler.service.typeName))].sort(),
    files: new Map(),
    symbols: new Map(),
    messages: new Set(),
    extensions: new Map(),
  };
  const pending = [...router.handlers.map((handler) => handler.service.file), ...extraFiles];
  for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
    if (index.files.has(file.proto.name)) continue;
    index.files.set(file.proto.name, file);
    pending.push(...file.dependencies);
    indexFile(index, file);
  }
  return index;
}

/**
 * Walks the FileDescriptorProto rather than the DescFile: only the proto has the synthetic map
 * entry messages, which reflection clients may ask for.
 */
function indexFile(index: ReflectionIndex, file: DescFile): void {
  const { proto } = file;
  const scope = proto.package === '' ? '' : `${proto.package}.`;
  for (const service of proto.service) {
    const serviceName = scope + service.name;
    index.symbols.set(serviceName, file);
    for (const method of service.method) index.symbols.set(`${serviceName}.${method.name}`, file);
  }
  for (const enumeration of proto.enumType) indexEnum(index, file, scope, enumeration);
  for (const extension of proto.extension) indexExtension(index, file, scope, extension);
  for (const message of proto.messageType) indexMessage(index, file, scope, message);
}

function indexMessage(
  index: ReflectionIndex,
  file: DescFile,
  scope: string,
  message: DescriptorProto,
): void {
  const typeName = scope + message.name;
  const inner = `${typeName}.`;
  index.symbols.set(typeName, file);
  index.messages.add(typeName);
  for (const field of message.field) index.symbols.set(inner + field.name, file);
  for (const enumeration of message.enumType) indexEnum(index, file, inner, enumeration);
  for (const extension of message.extension) indexExtension(index, file, inner, extension);
  for (const nested of message.nestedType) indexMessage(index, file, inner, nested);
}

/** An enum's values are named in the enum's own scope, as its siblings (C++ scoping). */
function indexEnum(
  index: ReflectionIndex,
  file: DescFile,
  scope: string,
  enumeration: EnumDescriptorProto,
): void {
  index.symbols.set(scope + enumeration.name, file);
  for (const value of enumeration.value) index.symbols.set(scope + value.name, file);
}

function indexExtension(
  index: ReflectionIndex,
  file: DescFile,
  scope: string,
  extension: FieldDescriptorProto,
): void {
  index.symbols.set(scope + extension.name, file);
  // Compiled descriptors name the extendee fully qualified, with a leading dot.
  const extendee = extension.extendee.replace(/^\./, '');
  let byNumber = index.extensions.get(extendee);
  if (byNumber === undefined) {
    byNumber = new Map();
    index.extensions.set(extendee, byNumber);
  }
  byNumber.set(extension.number, file);
}
