import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import * as z from 'zod';
import { callerSignal } from '../api/caller-signal.js';
import { NAME_MAX_CHARACTERS } from '../domain/greeting.js';
import { ProblemDetailsSchema } from '../errors/problem-details.js';
import { NameSchema } from './name-schema.js';
import type { RouteDeps } from './route-deps.js';

const GreetBody = z
  .strictObject({
    name: NameSchema.meta({
      description: `Who to greet: 1 to ${NAME_MAX_CHARACTERS} characters after trimming, no control characters.`,
      examples: ['David'],
    }),
    withError: z
      .boolean()
      .default(false)
      .meta({ description: 'Makes the backend fail on purpose, to show a failed trace.' }),
  })
  .meta({ id: 'GreetRequest', description: 'Unknown fields are rejected.' });

/** No parameters: a query string is rejected like an unknown body field, not silently ignored. */
const GreetQuery = z.strictObject({});

const GreetReply = z.object({ reply: z.string() }).meta({ id: 'GreetReply' });

/** POST /greet: asks the private backend for a greeting. */
export const greetRoute: FastifyPluginAsyncZod<RouteDeps> = async (app, { backend }) => {
  app.post(
    '/greet',
    {
      schema: {
        operationId: 'greet',
        tags: ['greeting'],
        summary: 'Greet someone through the private backend',
        querystring: GreetQuery,
        body: GreetBody,
        response: {
          200: GreetReply,
          400: ProblemDetailsSchema,
          413: ProblemDetailsSchema,
          415: ProblemDetailsSchema,
          // The backend's own quota, or its asking to slow down (Retry-After).
          429: ProblemDetailsSchema,
          500: ProblemDetailsSchema,
          // A backend that does not serve Greet: the api and it run different contracts.
          501: ProblemDetailsSchema,
          502: ProblemDetailsSchema,
          503: ProblemDetailsSchema,
          504: ProblemDetailsSchema,
        },
      },
    },
    async (request, reply) => {
      const { name, withError } = request.body;
      // The backend call stops if the caller goes away first.
      const greeting = await backend.greet({ name: name.trim(), withError }, callerSignal(reply));
      return { reply: greeting };
    },
  );
};
