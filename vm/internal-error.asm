; medv test guest that KVM cannot run: after "MEDV-GUEST start" it loads an x87 operand from
; unassigned memory (0xa0000; -nodefaults has no VGA). Under KVM that access is MMIO, and KVM's
; instruction emulator does not do x87 memory operands: the vCPU exits with an emulation failure and
; QEMU stops the VM in run state `internal-error` (stderr: "KVM internal error. Suberror: 1").
; Under TCG the load just reads 0xffff and the guest prints "MEDV-GUEST x87-mmio-ok".
; Used by test/e2e/guest.test.ts to prove that the harness reports that state.
bits 16
org 0x7c00

start:
        cli
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, 0x7c00
        cld
        mov si, msg_start
        call puts
        push ds
        mov ax, 0xa000
        mov ds, ax
        fninit
        fild word [0]
        pop ds
        mov si, msg_ok
        call puts
.halt:
        hlt
        jmp .halt

puts:
        lodsb
        test al, al
        jz .end
        mov ah, al
        mov dx, 0x3fd
.busy:
        in al, dx
        test al, 0x20
        jz .busy
        mov al, ah
        mov dx, 0x3f8
        out dx, al
        jmp puts
.end:
        ret

msg_start:      db "MEDV-GUEST start", 13, 10, 0
msg_ok:         db "MEDV-GUEST x87-mmio-ok", 13, 10, 0

        times 510 - ($ - $$) db 0
        dw 0xaa55
