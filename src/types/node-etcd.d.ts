declare module 'node-etcd';
