import { Etcd3, Range } from 'etcd3';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
const dir = mkdtempSync('/tmp/etcdauth-');
const p = spawn('etcd', ['--name','a','--data-dir',dir,'--listen-client-urls','http://127.0.0.1:20670','--advertise-client-urls','http://127.0.0.1:20670','--listen-peer-urls','http://127.0.0.1:20671','--initial-advertise-peer-urls','http://127.0.0.1:20671','--initial-cluster','a=http://127.0.0.1:20671'], {stdio:'ignore'});
await new Promise(r => setTimeout(r, 2500));
const root = new Etcd3({ hosts: 'http://127.0.0.1:20670' });
await root.user('root').create('rootpw');
await root.role('root').create();
await root.user('root').addRole('root');
const role = await root.role('hm').create();
await role.grant([{ permission: 'Readwrite', range: Range.prefix('/hm/svc/') }, { permission: 'Readwrite', range: Range.prefix('/hm/_hosts/') }]);
await root.user('hm').create('pw'); await root.user('hm').addRole('hm');
await root.auth.authEnable({});
root.close();
const { EtcdBackend } = await import('../dist/registry/etcd-backend.js');
const b = new EtcdBackend({ endpoints: ['http://127.0.0.1:20670'], prefix: '/hm' }, { ttl: 5, host: 'h1' }, { ETCDCTL_USER: 'hm:pw' });
const inst = (name) => ({ id: `h1:${name}:80`, name, address: '127.0.0.1', port: 80, protocol: 'tcp', tags: [], meta: {}, host: 'h1', status: 'passing' });
await b.register(inst('svc')); console.log('svc ok');
try { await b.register(inst('bad')); console.log('bad ok?!'); } catch (e) { console.log('bad:', e.name, e.message, e.code, e.constructor.name, Object.keys(e)); }
console.log('hb', await b.heartbeat([{id:'h1:svc:80', name:'svc'}]));
try { console.log('own', await b.listOwn('h1')); } catch (e) { console.log('listOwn:', e.name, e.message); }
await b.close(); p.kill('SIGKILL');
