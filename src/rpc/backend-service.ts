import { Code, ConnectError, type ConnectRouter } from '@connectrpc/connect';
import { checkName, greetingFor } from '../domain/greeting.js';
import { BackendService } from '../gen/backend_service/v1/backend_service_pb.js';

/** `backend_service.v1.BackendService`: one file per service, registered by `registerRpcs`. */
export function registerBackendService(router: ConnectRouter): void {
  router.service(BackendService, {
    greet(request) {
      const check = checkName(request.name);
      if (!check.ok) throw new ConnectError(check.problem, Code.InvalidArgument);
      if (request.withError) {
        throw new ConnectError('greeting failed on purpose (with_error=true)', Code.Internal);
      }
      return { reply: greetingFor(check.name) };
    },
  });
}
