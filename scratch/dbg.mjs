import Docker from 'dockerode';
const d = new Docker({socketPath: '/var/run/docker.sock'});
const t0 = Date.now();
const s = await d.getEvents({ filters: { type: ['container'], event: ['start','health_status'] }, abortSignal: new AbortController().signal });
console.log('events open', Date.now()-t0);
const l = await d.listContainers({ all: true, abortSignal: AbortSignal.any([new AbortController().signal, AbortSignal.timeout(10000)]) });
console.log('list', l.length, Date.now()-t0);
s.destroy();
