/* Entry from QEMU's ELF loader: SVC mode, MMU and caches off, interrupts masked, no stack.
   Clears .bss, sets the stack, calls start_kernel (which never returns). */
    .section .head, "ax"
    .arm
    .global _start
_start:
    ldr sp, =__stack_top
    ldr r0, =__bss_start
    ldr r1, =__bss_end
    mov r2, #0
1:  cmp r0, r1
    strlo r2, [r0], #4
    blo 1b
    bl start_kernel
2:  b 2b
    .ltorg
