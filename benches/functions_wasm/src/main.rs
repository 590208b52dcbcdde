// The steps of one invocation of fleetcore's wasm runtime (crates/functions/src/runtime/wasm.rs):
// fresh Store with a memory limiter, instantiate, alloc, write the event, handle (resumable, fuel
// slices), read the result. Measures invocations/s on one thread.
use std::time::Instant;
use wasmi::*;

struct State { limits: StoreLimits, log: Vec<u8> }

fn main() {
    let wat = std::fs::read_to_string(std::env::args().nth(1).expect("wat path")).expect("read");
    let mut config = Config::default();
    config.consume_fuel(true);
    let engine = Engine::new(&config);
    let module = Module::new(&engine, wat.as_bytes()).expect("module");
    let mut linker = Linker::<State>::new(&engine);
    linker.func_wrap("env", "log", |mut caller: Caller<'_, State>, ptr: i32, len: i32| {
        let mem = caller.get_export("memory").and_then(Extern::into_memory).expect("memory");
        let bytes = mem.data(&caller)[ptr as usize..(ptr + len) as usize].to_vec();
        caller.data_mut().log.extend_from_slice(&bytes);
        Ok(())
    }).expect("log");
    linker.func_wrap("env", "fail", |_: Caller<'_, State>, _: i32, _: i32| Ok(())).expect("fail");
    let event = br#"{"device":"d1","temperature":21.5}"#;
    let n = 200_000;
    let started = Instant::now();
    let mut total = 0usize;
    for _ in 0..n {
        let mut store = Store::new(&engine, State {
            limits: StoreLimitsBuilder::new().memory_size(128 << 20).instances(1).build(),
            log: Vec::new(),
        });
        store.limiter(|s| &mut s.limits);
        store.set_fuel(2_000_000).expect("fuel");
        let instance = linker.instantiate_and_start(&mut store, &module).expect("instance");
        let memory = instance.get_memory(&store, "memory").expect("memory");
        let alloc: TypedFunc<i32, i32> = instance.get_typed_func(&store, "alloc").expect("alloc");
        let handle: TypedFunc<(i32, i32), i64> = instance.get_typed_func(&store, "handle").expect("handle");
        let ptr = alloc.call(&mut store, event.len() as i32).expect("alloc call");
        memory.write(&mut store, ptr as usize, event).expect("write");
        store.set_fuel(2_000_000).expect("fuel");
        let packed = match handle.call_resumable(&mut store, (ptr, event.len() as i32)).expect("call") {
            TypedResumableCall::Finished(p) => p as u64,
            _ => panic!("did not finish"),
        };
        let (p, l) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        total += memory.data(&store)[p..p + l].to_vec().len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{{\"invocations\": {n}, \"seconds\": {secs:.3}, \"per_s\": {:.0}, \"bytes\": {total}}}", n as f64 / secs);
}
