export { freePort } from '../../tools/local-stack/free-port.ts';
