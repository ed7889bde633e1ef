import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { create, createFileRegistry, fromBinary } from '@bufbuild/protobuf';
import {
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
  file_google_protobuf_api,
  file_google_protobuf_cpp_features,
  file_google_protobuf_java_features,
} from '@bufbuild/protobuf/wkt';
import { Code, createClient, createRouterTransport, type Transport } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendService } from '../src/gen/backend_service/v1/backend_service_pb.js';
import * as v1 from '../src/gen/grpc/reflection/v1/reflection_pb.js';
import * as v1alpha from '../src/gen/grpc/reflection/v1alpha/reflection_pb.js';
import { createHealthStatus } from '../src/rpc/health.js';
import { registerReflection } from '../src/rpc/reflection.js';
import { createGrpcTestTransport } from './fixtures/grpc/create-grpc-test-transport.js';
import { type GrpcTestServer, startGrpcServer } from './fixtures/grpc/start-grpc-server.js';
import { type RoleProcess, startRole } from './helpers/roles.js';

const run = promisify(execFile);
const buf = fileURLToPath(new URL('../node_modules/.bin/buf', import.meta.url));

const services = [
  'backend_service.v1.BackendService',
  'grpc.health.v1.Health',
  'grpc.reflection.v1.ServerReflection',
  'grpc.reflection.v1alpha.ServerReflection',
];
const backendFile = 'backend_service/v1/backend_service.proto';
const healthFile = 'grpc/health/v1/health.proto';

/** A reflection request in the shape v1 and v1alpha share. */
type Ask = {
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
    | { case: undefined };
};

/** A reflection response reduced to what a test compares: file names instead of bytes. */
type Reply =
  | { files: string[] }
  | { services: string[] }
  | { extensionsOf: string; numbers: number[] }
  | { error: Code; message: string };

type ReflectionResponse = v1.ServerReflectionResponse | v1alpha.ServerReflectionResponse;

function reduce(response: ReflectionResponse): Reply {
  const answer = response.messageResponse;
  switch (answer.case) {
    case 'fileDescriptorResponse':
      return {
        files: answer.value.fileDescriptorProto.map(
          (bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name,
        ),
      };
    case 'listServicesResponse':
      return { services: answer.value.service.map(({ name }) => name) };
    case 'allExtensionNumbersResponse':
      return {
        extensionsOf: answer.value.baseTypeName,
        numbers: [...answer.value.extensionNumber].sort(),
      };
    case 'errorResponse':
      return { error: answer.value.errorCode, message: answer.value.errorMessage };
    case undefined:
      throw new Error('reflection response without message_response');
  }
}

async function* stream<T>(items: T[]): AsyncIterable<T> {
  yield* items;
}

/** Sends all requests on one ServerReflectionInfo stream of the given protocol version. */
const versions = {
  v1: async (transport: Transport, asks: Ask[]) => {
    const client = createClient(v1.ServerReflection, transport);
    const requests = asks.map((ask) => create(v1.ServerReflectionRequestSchema, ask));
    const responses: ReflectionResponse[] = [];
    for await (const response of client.serverReflectionInfo(stream(requests))) {
      responses.push(response);
    }
    return { requests, responses };
  },
  v1alpha: async (transport: Transport, asks: Ask[]) => {
    const client = createClient(v1alpha.ServerReflection, transport);
    const requests = asks.map((ask) => create(v1alpha.ServerReflectionRequestSchema, ask));
    const responses: ReflectionResponse[] = [];
    for await (const response of client.serverReflectionInfo(stream(requests))) {
      responses.push(response);
    }
    return { requests, responses };
  },
};

const notFound = (message: string): Reply => ({ error: Code.NotFound, message });

/** One row a case: the request, and the reply expected on the same stream. */
const cases: { name: string; ask: Ask; reply: Reply }[] = [
  {
    name: 'list_services',
    ask: { messageRequest: { case: 'listServices', value: '*' } },
    reply: { services },
  },
  {
    name: 'file_by_filename',
    ask: { messageRequest: { case: 'fileByFilename', value: backendFile } },
    reply: { files: [backendFile] },
  },
  {
    name: 'file_by_filename of an extra file sends its transitive imports',
    ask: { messageRequest: { case: 'fileByFilename', value: 'google/protobuf/api.proto' } },
    reply: {
      files: [
        'google/protobuf/api.proto',
        'google/protobuf/source_context.proto',
        'google/protobuf/type.proto',
        'google/protobuf/any.proto',
      ],
    },
  },
  ...(
    [
      ['service', 'backend_service.v1.BackendService', backendFile],
      ['method', 'backend_service.v1.BackendService.Greet', backendFile],
      ['message', 'backend_service.v1.GreetRequest', backendFile],
      ['field', 'backend_service.v1.GreetResponse.reply', backendFile],
      ['nested enum', 'grpc.health.v1.HealthCheckResponse.ServingStatus', healthFile],
      ['enum value', 'grpc.health.v1.HealthCheckResponse.SERVING', healthFile],
      ['nested map entry', 'grpc.health.v1.HealthListResponse.StatusesEntry', healthFile],
      [
        'reflection itself',
        'grpc.reflection.v1alpha.ServerReflection',
        'grpc/reflection/v1alpha/reflection.proto',
      ],
      ['extension', 'pb.cpp', 'google/protobuf/cpp_features.proto'],
    ] satisfies [string, string, string][]
  ).map(([kind, symbol, file]) => ({
    name: `file_containing_symbol: ${kind}`,
    ask: { messageRequest: { case: 'fileContainingSymbol' as const, value: symbol } },
    reply: {
      files: file.startsWith('google/') ? [file, 'google/protobuf/descriptor.proto'] : [file],
    },
  })),
  {
    name: 'file_containing_extension',
    ask: {
      messageRequest: {
        case: 'fileContainingExtension',
        value: { containingType: 'google.protobuf.FeatureSet', extensionNumber: 1001 },
      },
    },
    reply: { files: ['google/protobuf/java_features.proto', 'google/protobuf/descriptor.proto'] },
  },
  {
    name: 'all_extension_numbers_of_type',
    ask: {
      messageRequest: { case: 'allExtensionNumbersOfType', value: 'google.protobuf.FeatureSet' },
    },
    reply: { extensionsOf: 'google.protobuf.FeatureSet', numbers: [1000, 1001] },
  },
  {
    name: 'all_extension_numbers_of_type of a type nothing extends',
    ask: {
      messageRequest: {
        case: 'allExtensionNumbersOfType',
        value: 'backend_service.v1.GreetRequest',
      },
    },
    reply: { extensionsOf: 'backend_service.v1.GreetRequest', numbers: [] },
  },
  {
    name: 'unknown file',
    ask: { messageRequest: { case: 'fileByFilename', value: 'missing/v1/missing.proto' } },
    reply: notFound('file "missing/v1/missing.proto" not found on this server'),
  },
  {
    name: 'unknown symbol',
    ask: { messageRequest: { case: 'fileContainingSymbol', value: 'backend_service.v1.Missing' } },
    reply: notFound('symbol "backend_service.v1.Missing" not found on this server'),
  },
  {
    name: 'unknown extension',
    ask: {
      messageRequest: {
        case: 'fileContainingExtension',
        value: { containingType: 'google.protobuf.FeatureSet', extensionNumber: 9999 },
      },
    },
    reply: notFound('extension 9999 of "google.protobuf.FeatureSet" not found on this server'),
  },
  {
    name: 'extension numbers of an unknown type',
    ask: { messageRequest: { case: 'allExtensionNumbersOfType', value: 'missing.v1.Type' } },
    reply: notFound('message type "missing.v1.Type" not found on this server'),
  },
  {
    name: 'a request with no message_request set',
    ask: { messageRequest: { case: undefined } },
    reply: {
      error: Code.Unimplemented,
      message: 'unsupported reflection request: set one field of message_request',
    },
  },
];

let server: GrpcTestServer;

beforeAll(async () => {
  const health = createHealthStatus({ '': 'SERVING' });
  server = await startGrpcServer(health, [
    file_google_protobuf_api,
    file_google_protobuf_cpp_features,
    file_google_protobuf_java_features,
  ]);
});

afterAll(async () => {
  await server?.close();
});

describe.each(Object.entries(versions))('grpc.reflection.%s with a Connect client', (_, ask) => {
  let connection: ReturnType<typeof createGrpcTestTransport>;
  let replies: Reply[];
  let exchange: Awaited<ReturnType<typeof ask>>;

  beforeAll(async () => {
    connection = createGrpcTestTransport(server.url);
    exchange = await ask(
      connection.transport,
      cases.map(({ ask }) => ask),
    );
    replies = exchange.responses.map(reduce);
  });
  afterAll(() => connection.close());

  it('answers every request of one stream, in order, echoing it', () => {
    expect(exchange.responses).toHaveLength(cases.length);
    exchange.responses.forEach((response, i) => {
      expect(response.originalRequest).toEqual(exchange.requests[i]);
    });
  });

  it.each(cases.map((row, i) => ({ ...row, i })))('$name', ({ i, reply }) => {
    expect(replies[i]).toEqual(reply);
  });

  it('sends descriptors complete enough to build a registry', async () => {
    const { responses } = await ask(connection.transport, [
      { messageRequest: { case: 'fileContainingSymbol', value: 'google.protobuf.Api' } },
    ]);
    const answer = responses[0]?.messageResponse;
    if (answer?.case !== 'fileDescriptorResponse') throw new Error(`unexpected ${answer?.case}`);
    const files = new Map(
      answer.value.fileDescriptorProto.map((bytes) => {
        const file = fromBinary(FileDescriptorProtoSchema, bytes);
        return [file.name, file] as const;
      }),
    );
    // Imports first, as createFileRegistry wants; throws if the answer misses one.
    const ordered: FileDescriptorProto[] = [];
    const visit = (name: string): void => {
      const file = files.get(name);
      if (file === undefined) throw new Error(`${name} missing from ${[...files.keys()]}`);
      if (ordered.includes(file)) return;
      file.dependency.forEach(visit);
      ordered.push(file);
    };
    visit('google/protobuf/api.proto');
    const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
    expect(registry.getMessage('google.protobuf.Api')?.field.methods?.message?.typeName).toBe(
      'google.protobuf.Method',
    );
  });
});

describe('registerReflection', () => {
  it('lists services registered after it, and finds their files', async () => {
    const transport = createRouterTransport((router) => {
      registerReflection(router);
      router.service(BackendService, { greet: ({ name }) => ({ reply: `Hello ${name}!!` }) });
    });
    const { responses } = await versions.v1(transport, [
      { messageRequest: { case: 'listServices', value: '' } },
      { messageRequest: { case: 'fileContainingSymbol', value: BackendService.typeName } },
    ]);
    expect(responses.map(reduce)).toEqual([
      {
        services: [
          BackendService.typeName,
          'grpc.reflection.v1.ServerReflection',
          'grpc.reflection.v1alpha.ServerReflection',
        ],
      },
      { files: [backendFile] },
    ]);
  });
});

describe('reflection with buf curl (no schema given)', () => {
  async function bufCurl(...args: string[]): Promise<string> {
    const { stdout } = await run(
      buf,
      ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', ...args],
      {
        timeout: 20_000,
      },
    );
    return stdout;
  }

  it.each(['grpc-v1', 'grpc-v1alpha'])(
    '--list-services over %s',
    async (protocol) => {
      const listed = await bufCurl('--reflect-protocol', protocol, '--list-services', server.url);
      expect(listed.trim().split('\n').sort()).toEqual(services);
    },
    30_000,
  );

  it('--list-methods', async () => {
    const listed = await bufCurl('--list-methods', server.url);
    expect(listed.trim().split('\n').sort()).toEqual(
      [
        // Every method the proto declares, so an RPC a fork adds is listed too.
        ...BackendService.methods.map((method) => `${BackendService.typeName}/${method.name}`),
        'grpc.health.v1.Health/Check',
        'grpc.health.v1.Health/List',
        'grpc.health.v1.Health/Watch',
        'grpc.reflection.v1.ServerReflection/ServerReflectionInfo',
        'grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo',
      ].sort(),
    );
  }, 30_000);

  it.each(['grpc-v1', 'grpc-v1alpha'])(
    'calls Greet with the schema from %s',
    async (protocol) => {
      const reply = await bufCurl(
        '--reflect-protocol',
        protocol,
        '-d',
        '{"name":"Ada"}',
        `${server.url}/backend_service.v1.BackendService/Greet`,
      );
      expect(JSON.parse(reply)).toEqual({ reply: 'Hello Ada!!' });
    },
    30_000,
  );

  it('calls Health/List, whose response holds a map', async () => {
    const reply = await bufCurl(`${server.url}/grpc.health.v1.Health/List`);
    expect(JSON.parse(reply)).toEqual({ statuses: { '': { status: 'SERVING' } } });
  }, 30_000);
});

describe('reflection turned off (GRPC_REFLECTION=false, as deployed)', () => {
  let backend: RoleProcess;
  beforeAll(async () => {
    backend = await startRole('backend', { env: { GRPC_REFLECTION: 'false' } });
  });
  afterAll(async () => {
    await backend?.stop();
  });

  it('tells buf curl it is off and what to do instead, and logs no failure', async () => {
    const refused = await run(
      buf,
      ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '--list-services', backend.url],
      { timeout: 20_000 },
    ).then(
      () => undefined,
      (error: { stderr: string }) => error.stderr,
    );
    expect(refused).toContain(
      'unimplemented: server reflection is turned off on this server (GRPC_REFLECTION=false): give your client the schema instead, e.g. buf curl --schema proto',
    );
    const { stdout } = await run(
      buf,
      [
        'curl',
        '--protocol',
        'grpc',
        '--http2-prior-knowledge',
        '--schema',
        'proto',
        '-d',
        '{"name":"Ada"}',
        `${backend.url}/${BackendService.typeName}/Greet`,
      ],
      { timeout: 20_000 },
    );
    expect(JSON.parse(stdout)).toEqual({ reply: 'Hello Ada!!' });
    // Tools probing for reflection are not clients ahead of their server: no ERROR lines.
    expect(backend.logs().filter((line) => line.severity !== 'INFO')).toEqual([]);
  }, 30_000);
});
