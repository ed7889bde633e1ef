export { freePort } from './free-port.ts';
export {
  type LocalStack,
  type LocalStackOptions,
  type RoleStarter,
  startLocalStack,
} from './stack.ts';
