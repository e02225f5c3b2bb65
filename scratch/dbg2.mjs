import Docker from 'dockerode';
import { DockerSource } from '../dist/sources/docker/docker-source.js';
import { createLogger } from '../dist/log/logger.js';
const log = createLogger('json', 'trace');
const src = new DockerSource({ docker: new Docker({socketPath:'/var/run/docker.sock'}), endpoint: 'x', model: {hostname:'h', hostAddress:'127.0.0.1', internal:false, explicit:false, tags:[]}, healthGate: true, deregister:'always', resyncMs: 0, log,
 sink: { set: (o, l, r) => console.log('set', o.slice(0,12), l.length, r), complete: () => console.log('complete') } });
src.start();
setTimeout(async () => { console.log("stop at", Date.now()%100000); console.log(src.status); await src.stop(); process.exit(0); }, 3000);
